// Keyboard navigation, everywhere but in form fields: `j`/`k` move through
// a table's rows and Enter opens the selected one; `n`/`p` the next and
// previous page (`[`/`]` the first and last); `/` the filter or jump box;
// `g` then `d`, `s`, `a` or `t` the dashboard, streams, `$all` or this
// stream's live tail; `?` this list.

export const HELP = [
  ["j / k", "next / previous row"], ["Enter", "open the selected row"],
  ["n / p", "next / previous page"], ["[ / ]", "first / last page"],
  ["/", "filter or jump to an event"], ["g d · g s · g a", "dashboard · streams · $all"],
  ["t", "live tail of this stream"], ["?", "show this help"],
];

const PAGES = { n: "next", p: "previous", "[": "first", "]": "last" };
let pending = "";

export function listen(showHelp) {
  document.addEventListener("keydown", (key) => {
    if (key.ctrlKey || key.metaKey || key.altKey || key.target.closest("input, textarea, select, button, summary")) return;
    const combo = pending + key.key;
    pending = "";
    if (combo === "g") { pending = "g"; return; }
    const target = {
      gd: "#/", gs: "#/streams", ga: "#/stream/%24all",
    }[combo];
    if (target) location.hash = target;
    else if (PAGES[key.key]) document.querySelector(`#pager a[rel=${PAGES[key.key]}]`)?.click();
    else if (key.key === "j" || key.key === "k") move(key.key === "j" ? 1 : -1);
    else if (key.key === "Enter" && !key.target.closest("a")) document.querySelector("tr.selected a")?.click();
    else if (key.key === "/") document.querySelector("#stream-filter, #jump input, #all-filter input")?.focus();
    else if (key.key === "t") document.querySelector("a[href^='#/tail/']")?.click();
    else if (key.key === "?") showHelp();
    else return;
    key.preventDefault();
  });
}

function move(step) {
  const rows = [...document.querySelectorAll("#view table tbody tr")];
  if (!rows.length) return;
  const current = rows.findIndex((row) => row.classList.contains("selected"));
  const next = Math.max(0, Math.min(rows.length - 1, current + step));
  rows[current]?.classList.remove("selected");
  rows[next].classList.add("selected");
  rows[next].scrollIntoView({ block: "nearest" });
}
