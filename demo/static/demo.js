// The demo's live console: lines the host's on_call_event callback received, streamed from /demo/console.
(() => {
  "use strict";
  const list = document.getElementById("console");
  const empty = document.getElementById("console-empty");
  if (!list || !window.EventSource) return;

  const add = (line) => {
    const item = document.createElement("li");
    const time = document.createElement("time");
    const stamp = new Date(line.time);
    time.textContent = isNaN(stamp) ? "" : stamp.toLocaleTimeString();
    const kind = document.createElement("span");
    kind.className = "kind " + String(line.type).replace(/[^a-z]+/g, "-");
    kind.textContent = line.type;
    const what = document.createElement("span");
    what.className = "what";
    const who = line.agent ? line.agent + " · " : "";
    what.textContent = who + String(line.call_id).slice(0, 14) + (line.detail ? " — " + line.detail : "");
    item.append(time, kind, what);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    if (empty) empty.hidden = true;
  };

  const source = new EventSource("/demo/console");
  source.onmessage = (message) => {
    try {
      add(JSON.parse(message.data));
    } catch (err) {
      console.warn("[webcall demo] unreadable console line", err);
    }
  };
})();
