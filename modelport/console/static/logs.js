// The logs tab: below the lines the page was served with, the module's new lines, followed live from the
// API's own event stream (the session cookie authenticates it). Every value goes in with `textContent`.
"use strict";

(function () {
  const box = document.getElementById("log-lines");
  if (!box || !box.dataset.follow || typeof EventSource === "undefined") return;
  const button = document.getElementById("log-pause");
  const state = document.getElementById("log-state");
  const empty = document.getElementById("log-empty");
  const keep = Number(box.dataset.keep) || 5000;
  const STREAMS = new Set(["stdout", "stderr", "modelport"]);

  let source = null;
  let retryIn = 1000;
  let paused = false;
  let waiting = []; // entries (or gaps) received and not yet on the page
  let flushing = false;
  // Where the page stands: the time of the last line it holds, and how many of its lines have that time.
  // A (re)connection asks for the lines since that time and skips those it already holds.
  let lastTime = box.dataset.since;
  let atLast = Number(box.dataset.atSince) || 0;
  let skipping = 0;

  function say(key) {
    if (state) state.textContent = state.dataset[key] || "";
  }

  function element(entry) {
    const row = document.createElement("div");
    row.className = "log-line" + (STREAMS.has(entry.stream) ? " log-" + entry.stream : "");
    row.dataset.time = entry.time;
    const time = document.createElement("time");
    time.className = "log-time";
    time.dateTime = entry.time;
    time.textContent = String(entry.time).replace("T", " ").replace("Z", "");
    const where = document.createElement("span");
    where.className = "log-source";
    where.textContent = entry.version + "/" + entry.replica;
    const stream = document.createElement("span");
    stream.className = "log-stream";
    stream.textContent = entry.stream;
    row.append(time, " ", where, " ", stream);
    for (const id of entry.request_ids || []) {
      const link = document.createElement("a");
      link.className = "log-request";
      link.href = box.dataset.requests + encodeURIComponent(id);
      link.textContent = id;
      row.append(" ", link);
    }
    const text = document.createElement("span");
    text.className = "log-text";
    text.textContent = entry.line;
    row.append(" ", text);
    return row;
  }

  function gap(dropped) {
    const row = document.createElement("div");
    row.className = "log-line log-gap";
    row.textContent = box.dataset.gap + " " + dropped;
    return row;
  }

  function atBottom() {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  }

  // New lines are put on the page once per frame, at most `keep` of them; the oldest go first.
  function flush() {
    flushing = false;
    if (paused || !waiting.length) return;
    const follow = atBottom();
    const items = waiting.length > keep ? waiting.slice(-keep) : waiting;
    waiting = [];
    const fragment = document.createDocumentFragment();
    for (const item of items) fragment.append(item.dropped !== undefined ? gap(item.dropped) : element(item));
    box.append(fragment);
    let excess = box.childElementCount - keep;
    while (excess-- > 0) box.firstElementChild.remove();
    if (empty) empty.hidden = true;
    if (follow) box.scrollTop = box.scrollHeight;
  }

  function queue(item) {
    waiting.push(item);
    if (waiting.length > 2 * keep) waiting = waiting.slice(-keep);
    if (!paused && !flushing) {
      flushing = true;
      requestAnimationFrame(flush);
    }
  }

  function received(entry) {
    if (skipping && entry.time === lastTime) {
      skipping -= 1;
      return;
    }
    skipping = 0;
    if (entry.time === lastTime) atLast += 1;
    else {
      lastTime = entry.time;
      atLast = 1;
    }
    queue(entry);
  }

  function connect() {
    skipping = atLast;
    const url = box.dataset.follow + (lastTime ? "&since=" + encodeURIComponent(lastTime) : "");
    source = new EventSource(url, { withCredentials: true });
    source.onopen = () => {
      retryIn = 1000;
      say(paused ? "paused" : "live");
    };
    source.onmessage = (event) => received(JSON.parse(event.data));
    source.addEventListener("gap", (event) => queue(JSON.parse(event.data)));
    source.onerror = () => {
      // Reconnect ourselves, from where the page stands, rather than replaying the whole backlog.
      source.close();
      say("lost");
      setTimeout(connect, retryIn);
      retryIn = Math.min(retryIn * 2, 30000);
    };
  }

  if (button) {
    button.hidden = false;
    button.addEventListener("click", () => {
      paused = !paused;
      button.textContent = paused ? button.dataset.resume : button.dataset.pause;
      button.setAttribute("aria-pressed", String(paused));
      say(paused ? "paused" : "live");
      if (!paused) flush();
    });
  }
  box.scrollTop = box.scrollHeight;
  connect();
})();
