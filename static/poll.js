// Views that keep themselves fresh: `poll` repeats a view's refresh while
// the view is open. app.js calls `stopPolling` on every change of view (as
// it stops the live tail); a refresh whose element has left the page also
// stops, so a slow answer never brings a closed view back.

/** How often a view refreshes, in milliseconds. */
export const EVERY = 2000;

let timer = null;

export function stopPolling() {
  clearTimeout(timer);
  timer = null;
}

/**
 * Calls `refresh` every `every` ms (after each answer, so calls never
 * pile up) while `status` is in the page; `refresh` answering `false`
 * stops. A failure shows in `status` and the next refresh tries again.
 */
export function poll(refresh, status, every = EVERY) {
  stopPolling();
  const tick = async () => {
    if (!status.isConnected) return;
    let again = true;
    try {
      again = (await refresh()) !== false;
      status.classList.remove("error");
      status.textContent = again ? `Live: refreshed at ${new Date().toLocaleTimeString()}.` : "";
    } catch (error) {
      status.classList.add("error");
      status.textContent = `Refresh failed (${error.message}); trying again.`;
    }
    if (again && status.isConnected) timer = setTimeout(tick, every);
  };
  timer = setTimeout(tick, every);
}
