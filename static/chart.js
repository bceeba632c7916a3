// A small line chart in SVG, built with DOM calls (no library, no inline
// style: colours come from app.css through each line's class).

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600, HEIGHT = 150, LEFT = 8, RIGHT = 6, TOP = 16, BOTTOM = 18;

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** The smallest of 1, 2, 5 × 10ⁿ at or above `value`, so the scale reads well. */
function roundUp(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((step) => step >= value);
}

/**
 * A chart of a few series sampled at the same moments, newest at the right;
 * `series` is `[{name, className}]`. Answers `{element, update(values, span)}`,
 * `values` one array per series (oldest first) and `span` the time the
 * whole width stands for, in words ("10 min").
 */
export function lineChart(id, label, series) {
  const element = svg("svg", { id, class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label });
  const grid = svg("g", { class: "chart-grid" });
  for (const y of [TOP, (TOP + HEIGHT - BOTTOM) / 2, HEIGHT - BOTTOM]) {
    grid.append(svg("line", { x1: LEFT, x2: WIDTH, y1: y, y2: y }));
  }
  const top = svg("text", { x: LEFT, y: TOP - 4, class: "chart-label" }, "");
  const start = svg("text", { x: LEFT, y: HEIGHT - 4, class: "chart-label" }, "");
  const end = svg("text", { x: WIDTH, y: HEIGHT - 4, class: "chart-label", "text-anchor": "end" }, "now");
  const lines = series.map(({ name, className }) => {
    const line = svg("polyline", { class: `chart-line ${className}`, points: "", fill: "none" });
    line.append(svg("title", {}, name));
    return line;
  });
  // The newest value of each series, so that even one sample shows.
  const dots = series.map(({ className }) => svg("circle", { class: `chart-dot ${className}`, r: 3, cx: -10, cy: -10 }));
  element.append(grid, top, start, end, ...lines, ...dots);

  function update(values, span, capacity) {
    const peak = roundUp(Math.max(0, ...values.flat()));
    const slots = Math.max(capacity - 1, 1);
    const step = (WIDTH - LEFT - RIGHT) / slots;
    const height = HEIGHT - TOP - BOTTOM;
    values.forEach((points, index) => {
      const offset = capacity - points.length;
      const xy = points.map((value, at) => [LEFT + (offset + at) * step, TOP + height * (1 - value / peak)]);
      lines[index].setAttribute("points", xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
      const [x, y] = xy.length ? xy[xy.length - 1] : [-10, -10];
      dots[index].setAttribute("cx", x.toFixed(1));
      dots[index].setAttribute("cy", y.toFixed(1));
    });
    top.textContent = `${peak.toLocaleString()}/s`;
    start.textContent = `${span} ago`;
  }
  return { element, update };
}
