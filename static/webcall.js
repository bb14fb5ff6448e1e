/*! <dialnexa-webcall>: a DialNexa voice call on any page. MIT licence. See the README for attributes, events
 * (webcall:*), methods start() end() mute(), --webcall-* properties and parts; every visible string is in T. */
(() => {
  "use strict";

  const TAG = "dialnexa-webcall";
  const SCRIPT = document.currentScript;
  // Served as {prefix}/widget.js: the plugin's routes are its siblings.
  const BASE = SCRIPT && SCRIPT.src ? new URL(".", SCRIPT.src).href : "/webcall/";

  // Visible strings; an attribute of the same name overrides each.
  const T = {
    "label-open": "Open voice call",
    "label-close": "Close",
    "label-start": "Start call",
    "label-restart": "Call again",
    "label-retry": "Try again",
    "label-end": "End call",
    "label-mute": "Mute",
    "label-unmute": "Unmute",
    "label-volume": "Volume",
    "label-transcript": "Transcript",
    "label-agent": "Agent",
    "label-you": "You",
    "label-summary": "Summary",
    "label-callback": "Call me back instead",
    "label-phone": "Your phone number",
    "label-send": "Call me",
    "label-back": "Back",
    "text-title": "Talk to us",
    "text-intro": "Speak with our assistant right here in your browser.",
    "text-idle": "Ready",
    "text-microphone": "Allow microphone access…",
    "text-connecting": "Connecting…",
    "text-listening": "Listening",
    "text-thinking": "Thinking…",
    "text-speaking": "Agent speaking",
    "text-reconnecting": "Reconnecting…",
    "text-ended": "Call ended",
    "text-max": "Call ended: time limit reached",
    "text-lost": "Call ended: the connection was lost",
    "text-no-mic": "Microphone unavailable: you can hear the agent, but it can't hear you.",
    "text-insecure": "Calls need a secure (https) page.",
    "text-unsupported": "This browser can't make voice calls.",
    "text-frame-blocked": "This page can't use your microphone, so voice calls aren't available here.",
    "text-rate-limited": "Too many calls right now. Please try again in {s} s.",
    "text-busy": "All our agents are busy. Please try again in a few minutes.",
    "text-unavailable": "The call service is unavailable. Please try again later.",
    "text-forbidden": "Calls aren't allowed from here right now. Reloading the page may help.",
    "text-not-available": "Calling isn't available on this page.",
    "text-expired": "The call expired before it connected. Please try again.",
    "text-failed": "The call couldn't connect. Check your network and try again.",
    "text-callback": "Leave your number and we'll call you.",
    "text-phone-hint": "International format, e.g. +14155550123",
    "text-callback-consent": "I agree to receive a call at this number.",
    "text-callback-sent": "Thanks! We'll call you shortly.",
    "text-invalid-phone": "Enter your number in international format, e.g. +14155550123.",
    "text-consent-required": "Please tick the box to agree to the call.",
  };

  // Error code → message key (else "not-available" for 4xx, "unavailable" for 5xx).
  const CODES = {
    call_expired: "expired",
    rate_limited: "rate-limited",
    http_429: "rate-limited",
    capacity_reached: "busy",
    unauthorized: "forbidden",
    forbidden: "forbidden",
    bot_check_failed: "forbidden",
    invalid_phone_number: "invalid-phone",
    consent_required: "consent-required",
  };
  const HINTS = {
    origin_not_allowed: `add ${location.origin} to the plugin's allowed origins`,
    unknown_agent: "set agent to an alias configured on the server",
  };
  const LIVE = ["listening", "thinking", "speaking"];
  // Server end reasons with their own message.
  const ENDED = { network_failure: "text-lost", max_duration_reached: "text-max" };
  const BUSY = ["microphone", "connecting", ...LIVE];
  const busy = (st) => BUSY.includes(st);
  const noop = () => {};

  const MIC = "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3";
  const MIC_OFF = MIC + "M4 4l16 16";
  const CLOSE = "M6 6l12 12M18 6 6 18";
  const VOLUME = "M4 9v6h4l5 4V5L8 9zm12.5-.5a5 5 0 0 1 0 7";
  const PHONE =
    "M6.6 3.2 4 4.5C3 5 2.6 6 3 7c2.4 6.4 7.6 11.6 14 14 1 .4 2 0 2.5-1l1.3-2.6c.3-.6 0-1.3-.6-1.6l-3.4-1.7" +
    "c-.5-.3-1.2-.1-1.5.4l-.9 1.3c-2.7-1.2-4.9-3.4-6.1-6.1l1.3-.9c.5-.3.7-1 .4-1.5L8.2 3.8c-.3-.6-1-.9-1.6-.6z";

  // h("tag.class@part", attributes, ...children); buttons default to type=button.
  const h = (spec, attrs = {}, ...kids) => {
    const [, tag, cls, part] = spec.match(/(\w+)\.?([\w ]*)@?([\w-]*)/);
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (part) el.setAttribute("part", part);
    if (tag === "button") el.type = "button";
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    el.append(...kids);
    return el;
  };
  // An icon that keeps its size and line style without the stylesheet (width, height and presentation attributes):
  // an unstyled widget must not draw a page-wide black disc. `filled` icons are solid shapes.
  const svg = (d, { filled = false } = {}) => {
    const NS = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(NS, "svg");
    const path = document.createElementNS(NS, "path");
    const iconAttributes = { viewBox: "0 0 24 24", width: 20, height: 20, "aria-hidden": "true", fill: "none",
      stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" };
    for (const name in iconAttributes) icon.setAttribute(name, iconAttributes[name]);
    path.setAttribute("d", d);
    if (filled) {
      path.setAttribute("fill", "currentColor");
      path.setAttribute("stroke", "none");
    }
    icon.append(path);
    return icon;
  };
  const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

  // Whether the page's permissions policy lets it use the microphone. Inside an <iframe> that the embedding page did
  // not give allow="microphone", getUserMedia fails with no hint at the cause; Chromium answers this up front.
  const frameAllowsMicrophone = () => {
    const policy = document.permissionsPolicy || document.featurePolicy;
    return !policy || typeof policy.allowsFeature !== "function" || policy.allowsFeature("microphone");
  };

  // Why this page cannot place a call (a message key), or "" when it can. The widget asks before the first click, so
  // a visitor who can't call is offered a call back instead of a start button that cannot work.
  const callBlocker = () => {
    if (!window.isSecureContext) return "text-insecure";
    const media = navigator.mediaDevices;
    if (!media || typeof media.getUserMedia !== "function" || !window.RTCPeerConnection) return "text-unsupported";
    if (!frameAllowsMicrophone()) return "text-frame-blocked";
    return "";
  };
  // What the site owner reads in the console about each reason, once per page.
  const BLOCKER_ADVICE = {
    "text-insecure": "calls need a secure page: serve it over https (localhost works too).",
    "text-unsupported":
      "this browser has no getUserMedia or RTCPeerConnection (an in-app browser or an old one), so the widget " +
      "offers a call back instead.",
    "text-frame-blocked":
      'this page is in an <iframe> without microphone access: add allow="microphone" to the <iframe> element ' +
      'that embeds it, e.g. <iframe src="…" allow="microphone">.',
  };
  const advisedBlockers = new Set();
  const adviseSiteOwner = (blocker) => {
    if (advisedBlockers.has(blocker)) return;
    advisedBlockers.add(blocker);
    console.warn("[webcall] " + BLOCKER_ADVICE[blocker]);
  };

  // Write only changes, so live regions don't re-announce.
  const txt = (el, s) => el.textContent !== s && (el.textContent = s);
  const stop = (stream) => stream && stream.getTracks().forEach((t) => t.stop());
  const fail = (code, key, s) => Object.assign(new Error(code), { code, key, s });
  // Await ICE gathering (no trickle), at most `ms`; host candidates only (`quick`): until a 25 ms lull.
  const gathered = (pc, ms, quick) =>
    new Promise((done) => {
      let t = setTimeout(done, ms);
      pc.onicecandidate = (e) => {
        if (!e.candidate) done();
        else if (quick) clearTimeout(t), (t = setTimeout(done, 25));
      };
      if (pc.iceGatheringState === "complete") done();
    });

  const DARK =
    "--b:var(--webcall-bg,#1c1f29);--f:var(--webcall-fg,#eceef4);--m:var(--webcall-muted,#a6adbd);" +
    "--d:var(--webcall-danger,#f0443a);--fr:color-mix(in srgb,var(--a),#fff 45%)";
  const CSS = `
:host{--a:var(--webcall-accent,#4f46e5);--af:var(--webcall-accent-fg,#fff);--b:var(--webcall-bg,#fff);
--f:var(--webcall-fg,#171a21);--m:var(--webcall-muted,#596070);--d:var(--webcall-danger,#d92d20);--fr:var(--a);
--s:color-mix(in srgb,var(--f) 8%,transparent);--ln:color-mix(in srgb,var(--f) 14%,transparent);
--r:var(--webcall-radius,16px);--sh:var(--webcall-shadow,0 12px 32px #0003,0 2px 8px #0002);
display:block;max-width:420px;color:var(--f);text-align:start;accent-color:var(--a);
font:14px/1.45 var(--webcall-font,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif)}
@media (prefers-color-scheme:dark){:host(:not([theme=light])){${DARK}}}
:host([theme=dark]){${DARK}}
:host([floating=true]){position:fixed;bottom:var(--webcall-offset,20px);
inset-inline-end:var(--webcall-offset,20px);z-index:var(--webcall-z,2147483000);max-width:none}
*{box-sizing:border-box}
[hidden]{display:none!important}
p{margin:0}
button,input{font:inherit;color:inherit;margin:0}
button{cursor:pointer}
button:disabled{cursor:default;opacity:.45}
:focus-visible{outline:2px solid var(--fr);outline-offset:2px}
svg{width:20px;height:20px;flex:none}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.launch,.orb,.ic{display:grid;place-items:center;flex:none;border-radius:50%;border:0;padding:0;
background:var(--a);color:var(--af)}
.launch{width:56px;height:56px;box-shadow:var(--sh);transition:transform .15s}
@media (hover:hover){.launch:hover{transform:scale(1.06)}}
.launch svg{width:26px;height:26px}
.panel{display:flex;flex-direction:column;gap:14px;padding:16px;background:var(--b);border:1px solid var(--ln);
border-radius:var(--r);box-shadow:var(--sh)}
:host([floating=true]) .panel{position:absolute;bottom:calc(100% + 12px);inset-inline-end:0;
width:min(var(--webcall-width,360px),calc(100vw - 2 * var(--webcall-offset,20px)));
max-height:calc(100vh - 120px);max-height:calc(100dvh - 120px);overflow:auto;animation:in .18s ease-out}
@keyframes in{from{opacity:0;transform:translateY(8px)}}
.hd{display:flex;align-items:center;gap:12px}
.orb{width:40px;height:40px}
.hx{flex:1;min-width:0}
.ti{display:block;font-size:15px;font-weight:600}
.st{display:flex;gap:8px;color:var(--m);font-size:13px}
.tm{margin-inline-start:auto;font-variant-numeric:tabular-nums}
:host([state=error]) [role=status]{color:var(--d)}
.x{align-self:flex-start;display:grid;place-items:center;width:44px;height:44px;margin-block-start:-8px;margin-inline-end:-8px;padding:0;border:0;border-radius:8px;background:none;color:var(--m)}
.x:hover{background:var(--s)}
.fine{color:var(--m);font-size:12px}
.note,.sum{padding:8px 12px;border-radius:10px;border:1px solid var(--ln)}
.sum strong{display:block;font-size:12px;color:var(--m)}
.btn{display:flex;align-items:center;justify-content:center;gap:8px;width:100%;min-height:44px;padding:10px 16px;border:0;
border-radius:calc(var(--r) * .75);background:var(--a);color:var(--af);font-weight:600}
.btn:hover:not(:disabled),.end:hover{filter:brightness(1.1)}
.link{align-self:center;min-height:44px;padding:0 8px;border:0;background:none;font-size:13px;text-decoration:underline;
text-underline-offset:3px}
.ctl{display:flex;align-items:center;gap:10px}
.ic{width:44px;height:44px;background:var(--s);color:inherit;border:1px solid var(--ln)}
.ic:hover:not(:disabled){border-color:var(--m)}
.ic[aria-pressed=true]{background:var(--f);color:var(--b)}
.end{background:var(--d);border-color:transparent;color:#fff}
.end svg{transform:rotate(135deg)}
.meter{flex:1;min-width:24px;height:6px;border-radius:3px;background:var(--s);overflow:hidden}
.meter i{display:block;height:100%;width:calc(var(--l,0) * 100%);background:var(--a);
transition:width .08s}
.vol{display:flex;align-items:center;gap:4px;color:var(--m)}
.vol input{width:72px}
.log{display:flex;flex-direction:column;gap:6px;max-height:240px;overflow-y:auto;overscroll-behavior:contain}
.log:empty,.err:empty{display:none}
.log p{align-self:flex-start;max-width:85%;padding:7px 11px;border-radius:14px;background:var(--s);
overflow-wrap:anywhere}
.log .u{align-self:flex-end;background:var(--a);color:var(--af)}
.log .p{opacity:.7}
form{display:flex;flex-direction:column;gap:10px}
label{font-weight:500}
[type=tel]{display:block;width:100%;margin-top:4px;padding:9px 11px;border:1px solid var(--m);
border-radius:10px;background:var(--b)}
[aria-invalid=true]{border-color:var(--d)}
.chk{display:flex;align-items:flex-start;gap:8px;font-weight:400;font-size:13px}
.chk input{margin-top:3px}
.err{color:var(--d);font-size:13px}
:host([state=speaking]) :is(.orb,.launch){animation:pulse 1.3s ease-in-out infinite}
:host([state=thinking]) .orb{animation:breathe 1.2s ease-in-out infinite}
@keyframes pulse{50%{box-shadow:0 0 0 8px color-mix(in srgb,var(--a) 30%,transparent)}}
@keyframes breathe{50%{opacity:.55}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}`;

  // One constructable stylesheet for all instances (CSP-safe, unlike style elements). Browsers without constructable
  // stylesheets (Safari before 16.4, WPE) show the widget unstyled: native buttons and text, icons at their own size.
  let sheet = null;
  let warnedUnstyled = false;
  const adoptStyles = (root) => {
    if ("adoptedStyleSheets" in ShadowRoot.prototype && "replaceSync" in CSSStyleSheet.prototype) {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
      }
      root.adoptedStyleSheets = [sheet];
    } else if (!warnedUnstyled) {
      warnedUnstyled = true;
      console.warn("[webcall] this browser lacks constructable stylesheets, so the widget is unstyled.");
    }
  };

  // Keeps the screen on during a call, where the Screen Wake Lock API exists. The browser releases the lock whenever
  // the page is hidden (tab switched, phone locked), so it is requested again each time the page is visible again.
  class ScreenWakeLock {
    #wanted = false;
    #sentinel = null;
    #onVisibilityChange = () => {
      if (this.#wanted && document.visibilityState === "visible") this.#request();
    };

    acquire() {
      if (this.#wanted || !navigator.wakeLock) return;
      this.#wanted = true;
      document.addEventListener("visibilitychange", this.#onVisibilityChange);
      this.#request();
    }

    release() {
      if (!this.#wanted) return;
      this.#wanted = false;
      document.removeEventListener("visibilitychange", this.#onVisibilityChange);
      const sentinel = this.#sentinel;
      this.#sentinel = null;
      if (sentinel && !sentinel.released) sentinel.release().catch(noop);
    }

    async #request() {
      if (this.#sentinel && !this.#sentinel.released) return;
      try {
        const sentinel = await navigator.wakeLock.request("screen");
        if (this.#wanted) this.#sentinel = sentinel;
        else sentinel.release().catch(noop); // the call ended while the browser was deciding
      } catch (error) {
        // Refused (battery saver, a permissions policy, the page hidden again): the call goes on without it.
      }
    }
  }

  class WebCall extends HTMLElement {
    // Why this page can't place a call (a message key), or "".
    #blocker = "";
    #screenWakeLock = new ScreenWakeLock();
    // The sender of the microphone track, which a headset plugged in or out mid-call swaps (see #followInputDevices).
    #microphoneSender = null;
    #switchingMicrophone = false;
    #onInputDevicesChanged = () => this.#switchMicrophone();
    // The level meter's source node, rewired when the microphone changes.
    #meterAnalyser = null;
    #meterSource = null;

    static get observedAttributes() {
      return ["floating", "consent", "callback", ...Object.keys(T)];
    }

    constructor() {
      super();
      Object.assign(this, { st: "idle", msg: "", open: false, muted: false, view: false, note: "", summary: "" });
      this.tm = {}; // named timers
      this.lines = {}; // each role's non-final transcript line
      this.seen = new Set(); // lifecycle event ids
      this.onHide = () => this.end("pagehide", undefined, true);
      const root = this.attachShadow({ mode: "open" });
      adoptStyles(root);
      // render() fills data-t (text) and data-l (accessible name) from T.
      const $ = (this.$ = {});
      const text = (spec, key, attrs) => h(spec, { ...attrs, "data-t": key });
      const on = (el, type, fn) => el.addEventListener(type, fn);

      $.launch = h("button.launch@launcher", { "data-l": "label-open", "aria-controls": "p" }, svg(MIC));
      $.status = h("span@status", { role: "status", "aria-live": "polite" });
      $.timer = h("span.tm@timer");
      $.close = h("button.x@close", { "data-l": "label-close" }, svg(CLOSE));
      $.intro = text("p@intro", "text-intro");
      $.note = h("p.note@note");
      const logAttrs = { role: "log", "aria-live": "polite", tabindex: 0, "data-l": "label-transcript" };
      $.log = h("div.log@transcript", logAttrs);
      $.sum = h("p.sum@summary", {}, text("strong", "label-summary"), ($.sumText = h("span")));

      $.phone = h("input", { id: "ph", type: "tel", autocomplete: "tel", "aria-describedby": "hi er" });
      $.agree = h("input", { type: "checkbox" });
      $.err = h("p.err", { id: "er", role: "alert" });
      $.back = text("button.link", "label-back");
      $.form = h(
        "form@callback",
        { novalidate: "" },
        text("p", "text-callback"),
        h("div", {}, text("label", "label-phone", { for: "ph" }), $.phone),
        text("p.fine", "text-phone-hint", { id: "hi" }),
        h("label.chk", {}, $.agree, text("span", "text-callback-consent")),
        $.err,
        ($.send = text("button.btn", "label-send", { type: "submit" })),
        $.back
      );

      $.mute = h("button.ic@mute", { "data-l": "label-mute" }, svg(MIC));
      $.meter = h("span.meter@meter", { "aria-hidden": "true" }, h("i"));
      $.vol = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: 1 });
      $.hang = h("button.ic end@hangup", { "data-l": "label-end" }, svg(PHONE, { filled: true }));
      $.go = h("button.btn@button", {}, svg(PHONE, { filled: true }), ($.goText = h("span")));
      $.consent = h("p.fine@consent");
      $.cbLink = text("button.link@callback-link", "label-callback");
      $.ctl = h(
        "div.ctl@controls",
        {},
        $.mute,
        $.meter,
        h("label.vol@volume", {}, svg(VOLUME), text("span.sr", "label-volume"), $.vol),
        $.hang
      );
      const title = text("strong.ti@title", "text-title", { id: "t" });
      const header = h(
        "div.hd@header",
        {},
        h("span.orb@orb", {}, svg(MIC)),
        h("div.hx", {}, title, h("p.st", {}, $.status, $.timer)),
        $.close
      );
      const body = [$.intro, $.note, $.log, $.sum, $.form, $.ctl, $.go, $.consent, $.cbLink];
      $.panel = h("section.panel@panel", { id: "p", "aria-labelledby": "t" }, header, ...body);
      $.audio = h("audio", { autoplay: "" });
      root.append($.launch, $.panel, $.audio);

      on($.launch, "click", () => this.toggle(!this.open));
      on($.close, "click", () => this.toggle(false));
      on($.go, "click", () => this.start());
      on($.hang, "click", () => this.end());
      on($.mute, "click", () => this.mute());
      on($.vol, "input", () => ($.audio.volume = +$.vol.value));
      on($.cbLink, "click", () => this.showForm(true));
      on($.back, "click", () => this.showForm(false));
      on($.form, "submit", (e) => this.callback(e));
      on($.panel, "keydown", (e) => {
        if (e.key !== "Escape") return;
        if (busy(this.st)) this.end();
        else if (this.view) this.showForm(false);
        else if (this.floating) this.toggle(false);
      });
    }

    get state() {
      return this.st;
    }
    get floating() {
      return this.getAttribute("floating") === "true";
    }

    connectedCallback() {
      this.#blocker = callBlocker();
      if (this.#blocker) adviseSiteOwner(this.#blocker);
      this.setAttribute("state", this.st);
      this.msg = this.msg || this.t("text-idle");
      this.render();
    }
    disconnectedCallback() {
      this.end("removed");
      this.teardown();
      this.closeEvents();
      if (this.cb) this.cb.abort();
    }
    attributeChangedCallback() {
      if (this.isConnected) this.render();
    }

    t(key) {
      const v = this.getAttribute(key);
      return v === null ? T[key] : v;
    }

    vars() {
      const s = this.getAttribute("variables");
      try {
        const v = JSON.parse(s || "{}");
        if (v && typeof v === "object" && !Array.isArray(v)) return v;
      } catch (e) {
        /* warned below */
      }
      console.warn('[webcall] the "variables" attribute must be a JSON object like {"name":"Ada"}; sending none.');
      return {};
    }

    // Resolve a route name or server URL against the endpoint.
    href(u) {
      return new URL(u, new URL(this.getAttribute("endpoint") || BASE, location.href).href.replace(/\/*$/, "/")).href;
    }

    emit(type, detail, cancelable = false) {
      return this.dispatchEvent(
        new CustomEvent("webcall:" + type, { detail, bubbles: true, composed: true, cancelable })
      );
    }

    timer(k, fn, ms, repeat) {
      this.clear(k);
      this.tm[k] = (repeat ? setInterval : setTimeout)(fn, ms);
    }
    clear(k) {
      clearTimeout(this.tm[k]); // intervals too
      delete this.tm[k];
    }

    set(st, msg) {
      const was = this.st;
      const a = document.activeElement;
      const ours = a === this || !a || a === document.body;
      this.st = st;
      this.msg = msg || this.t("text-" + st);
      this.setAttribute("state", st);
      this.render();
      if (st === was) return;
      this.emit("state", { state: st });
      // Focus hang-up during a call, start after it.
      if (ours && busy(st) !== busy(was)) (busy(st) ? this.$.hang : this.$.go).focus();
    }

    render() {
      const { $, st, view } = this;
      const root = this.shadowRoot;
      const on = busy(st);
      const live = LIVE.includes(st);
      const track = this.track();
      const consent = this.getAttribute("consent") || "";
      const mic = this.note === "text-no-mic";
      $.launch.dataset.l = this.open ? "label-close" : "label-open";
      $.launch.firstChild.firstChild.setAttribute("d", this.open ? CLOSE : MIC);
      $.launch.setAttribute("aria-expanded", this.open);
      $.goText.dataset.t = st === "error" ? "label-retry" : st === "ended" ? "label-restart" : "label-start";
      $.mute.title = this.t(this.muted ? "label-unmute" : "label-mute");
      $.mute.firstChild.firstChild.setAttribute("d", this.muted || !track ? MIC_OFF : MIC);
      $.mute.setAttribute("aria-pressed", this.muted);
      $.mute.disabled = !track;
      for (const el of root.querySelectorAll("[data-t]")) txt(el, this.t(el.dataset.t));
      for (const el of root.querySelectorAll("[data-l]")) {
        el.setAttribute("aria-label", this.t(el.dataset.l));
        if (el.localName === "button" && el !== $.mute) el.title = this.t(el.dataset.l);
      }
      const blocker = this.#blocker;
      txt($.status, st === "idle" && blocker ? this.t(blocker) : this.msg);
      txt($.note, this.note && this.t(this.note));
      txt($.sumText, this.summary);
      txt($.consent, consent);
      const shown = [
        [$.launch, this.floating],
        [$.close, this.floating],
        [$.panel, !this.floating || this.open],
        [$.timer, live],
        // The intro invites a call in the browser: not where the browser can't make one.
        [$.intro, st === "idle" && !view && !blocker && $.intro.textContent],
        [$.note, this.note && !view && st !== "error"],
        [$.log, !view],
        [$.sum, st === "ended" && this.summary && !view],
        [$.form, view],
        [$.ctl, on && !view],
        [$.go, !on && !view && !blocker],
        [$.consent, consent && !on && !view],
        [$.cbLink, !view && (on ? live && mic : this.getAttribute("callback") === "true" || mic || !!blocker)],
      ];
      for (const [el, show] of shown) el.hidden = !show;
      // Without a way to call here, "call me back" is the main action.
      $.cbLink.className = blocker ? "btn" : "link";
    }

    toggle(open) {
      this.open = open;
      this.render();
      const $ = this.$;
      const main = this.#blocker ? $.cbLink : $.go;
      (open ? (busy(this.st) ? $.hang : this.view ? $.phone : main) : $.launch).focus();
    }

    track() {
      return this.mic ? this.mic.getAudioTracks()[0] : null;
    }

    mute(on = !this.muted) {
      const track = this.track();
      const muted = !!track && !!on;
      if (track) track.enabled = !muted;
      if (muted !== this.muted) {
        this.muted = muted;
        this.render();
        this.emit("mute", { muted });
      }
      return muted;
    }

    // Call from a user gesture, so the browser lets audio play.
    async start() {
      if (busy(this.st)) return;
      const detail = { agent: this.getAttribute("agent") || "", variables: this.vars() };
      if (!this.emit("before-start", detail, true)) return;
      this.teardown();
      this.closeEvents();
      Object.assign(this, { open: true, view: false, note: "", summary: "", mint: null, lines: {} });
      this.seen.clear();
      this.$.log.replaceChildren();
      this.#blocker = callBlocker();
      if (this.#blocker) {
        adviseSiteOwner(this.#blocker);
        const codes = { "text-insecure": "insecure_context", "text-frame-blocked": "microphone_blocked" };
        return this.failed(fail(codes[this.#blocker] || "unsupported", this.#blocker));
      }
      const ac = (this.ac = new AbortController());
      const sig = ac.signal;
      // The peer connection comes first: its offer travels with the start request while the visitor answers the
      // microphone prompt, and the microphone joins the call (replaceTrack) when it is allowed.
      const pc = this.#openPeerConnection();
      const micP = navigator.mediaDevices
        .getUserMedia({ audio: AUDIO_CONSTRAINTS })
        .catch((e) => {
          if (sig.aborted) return null;
          // Go on receive-only, and offer a call back.
          this.note = "text-no-mic";
          console.warn(`[webcall] no microphone (${e.name}), so the call is receive-only; allow it to talk.`);
          this.emit("error", { code: "microphone_unavailable", message: this.t(this.note), fatal: false });
          return null;
        });
      try {
        (this.ctx = new AudioContext()).resume().catch(noop);
      } catch (e) {
        this.ctx = null;
      }
      this.$.audio.srcObject = new MediaStream();
      this.$.audio.play().catch(noop);
      addEventListener("pagehide", this.onHide);
      this.set("microphone");
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc, 1500, true);
        if (sig.aborted) return;
        // One request: the plugin starts the call at DialNexa and answers with DialNexa's SDP answer.
        const starting = this.post("sessions", { ...detail, offer: pc.localDescription.sdp }, sig);
        starting.catch(noop); // awaited below
        const mic = await micP;
        if (sig.aborted) return stop(mic);
        this.mic = mic;
        const track = this.track();
        if (track) {
          await this.#microphoneSender.replaceTrack(track);
          this.#followInputDevices(track);
        }
        this.set("connecting");
        const started = (this.mint = await starting);
        if (started.events_url && started.token) this.events(started);
        this.loc = started.media_url ? this.href(started.media_url) : "";
        this.auth = { Authorization: "Bearer " + started.token };
        if (typeof started.answer !== "string") throw fail("invalid_response", "text-unavailable");
        await pc.setRemoteDescription({ type: "answer", sdp: started.answer });
        this.timer("connect", () => this.failed(fail("connect_timeout", "text-failed")), 15000);
      } catch (e) {
        if (!sig.aborted) this.failed(e);
      }
    }

    // A send-and-receive audio transceiver (the microphone is attached later) and the "events" data channel.
    #openPeerConnection() {
      const pc = (this.pc = new RTCPeerConnection());
      this.#microphoneSender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
      const dc = (this.dc = pc.createDataChannel("events"));
      dc.onmessage = (e) => this.onData(e.data);
      dc.onclose = () => LIVE.includes(this.st) && this.finish("remote_hangup");
      // Agent audio via <audio>, not WebAudio, so echo cancellation hears it.
      pc.ontrack = (e) => {
        this.$.audio.srcObject = e.streams[0] || new MediaStream([e.track]);
        this.$.audio.play().catch(noop);
      };
      pc.onconnectionstatechange = () => this.onConnection();
      return pc;
    }

    async post(path, body, signal) {
      const url = this.href(path);
      const init = { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin" };
      const r = await fetch(url, { ...init, body: JSON.stringify(body), signal }).catch((e) => {
        if (signal.aborted) throw e;
        console.warn(`[webcall] could not reach ${url} (${e.message}): check the endpoint attribute and the network.`);
        throw fail("network_error", "text-unavailable");
      });
      const j = await r.json().catch(() => ({}));
      if (r.ok) return j;
      const code = j.code || "http_" + r.status;
      const hint = HINTS[code] ? `; ${HINTS[code]}.` : "";
      console.warn(`[webcall] POST ${url} → ${r.status} ${code}: ${j.message || r.statusText}${hint}`);
      const key = CODES[code] || (r.status < 500 ? "not-available" : "unavailable");
      throw fail(code, "text-" + key, +r.headers.get("Retry-After"));
    }

    onConnection() {
      const s = this.pc ? this.pc.connectionState : "closed";
      const st = this.st;
      if (s === "connected") {
        this.clear("connect");
        if (st === "connecting") this.live();
        else if (this.tm.grace) {
          this.clear("grace");
          this.set(st);
        }
      } else if (s === "failed" && st === "connecting") {
        this.failed(fail("connect_failed", "text-failed"));
      } else if (/failed|disconnected/.test(s) && LIVE.includes(st) && !this.tm.grace) {
        // Grace period for the network; try an ICE restart.
        this.set(st, this.t("text-reconnecting"));
        // No hang-up request: the network is gone, and DialNexa records the call as a network failure.
        this.timer("grace", () => this.finish("connection_lost", "text-lost"), 5000);
        this.restartIce();
      }
    }

    // RFC 9725 §4.3 ICE restart through the plugin's media resource; 405 = unsupported.
    async restartIce() {
      const pc = this.pc;
      if (!this.loc || this.noPatch) return;
      try {
        await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
        await gathered(pc, 1000);
        const frag = pc.localDescription.sdp.match(/^(a=ice-(ufrag|pwd|options)|m=|a=mid|a=candidate).*\r\n/gm);
        const r = await fetch(this.loc, {
          method: "PATCH",
          headers: { ...this.auth, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" },
          body: frag.join(""),
        });
        this.noPatch = r.status === 405 || r.status === 501;
        const ans = r.status === 200 ? await r.text() : "";
        const ice = (k) => (ans.match(new RegExp(`a=ice-${k}:\\S+`)) || [])[0];
        if (!ice("ufrag") || !ice("pwd") || this.pc !== pc) throw 0;
        const sdp = pc.remoteDescription.sdp.replace(/a=ice-ufrag:\S+/g, ice("ufrag"));
        await pc.setRemoteDescription({ type: "answer", sdp: sdp.replace(/a=ice-pwd:\S+/g, ice("pwd")) });
        for (const c of ans.match(/^a=candidate:.*/gm) || [])
          pc.addIceCandidate({ candidate: c.slice(2), sdpMLineIndex: 0 }).catch(noop);
      } catch (e) {
        if (pc.signalingState === "have-local-offer") pc.setLocalDescription({ type: "rollback" }).catch(noop);
      }
    }

    live() {
      const t0 = Date.now();
      const { $, mint, ctx, mic } = this;
      const tick = () => {
        const s = Math.floor((Date.now() - t0) / 1000);
        txt($.timer, `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`);
      };
      tick();
      this.timer("clock", tick, 1000, true);
      const max = mint.max_call_seconds;
      if (max > 0) this.timer("max", () => this.end("max_duration", "text-max"), max * 1000);
      this.set("listening");
      this.#screenWakeLock.acquire();
      // Level meter of the local microphone only.
      if (!ctx || !mic) return;
      const an = (this.#meterAnalyser = ctx.createAnalyser());
      const buf = new Float32Array((an.fftSize = 512));
      let lvl = 0;
      this.#meterSource = ctx.createMediaStreamSource(mic);
      this.#meterSource.connect(an);
      const loop = () => {
        an.getFloatTimeDomainData(buf);
        let sum = 0;
        for (const v of buf) sum += v * v;
        lvl = this.muted ? 0 : Math.max(Math.min(1, Math.sqrt(sum / buf.length) * 5), lvl * 0.9);
        this.level(lvl);
        this.raf = requestAnimationFrame(loop);
      };
      loop();
    }

    level(v) {
      this.$.meter.style.setProperty("--l", v.toFixed(2));
    }

    onData(raw) {
      let m;
      try {
        m = JSON.parse(raw) || {};
      } catch (e) {
        return;
      }
      if (m.type === "agent_state") {
        if (LIVE.includes(m.state) && LIVE.includes(this.st) && !this.tm.grace) this.set(m.state);
      } else if (m.type === "transcript" && typeof m.text === "string") {
        this.line(m.role === "user" ? "user" : "agent", m.text, m.final !== false);
      } else if (m.type === "call_ended") {
        this.finish(m.reason || "agent_hangup", ENDED[m.reason]);
      }
    }

    line(role, text, final) {
      const log = this.$.log;
      const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      let p = this.lines[role];
      if (!p) {
        const who = h("span.sr", {}, this.t(role === "user" ? "label-you" : "label-agent") + ": ");
        p = this.lines[role] = h(role === "user" ? "p.u" : "p.a", { dir: "auto" }, who, "");
        log.append(p);
        if (log.childElementCount > 200) log.firstChild.remove();
      }
      p.lastChild.data = text;
      p.classList.toggle("p", !final);
      if (final) this.lines[role] = null;
      if (stick) log.scrollTop = log.scrollHeight;
      this.emit("transcript", { role, text, final });
    }

    // SSE lifecycle events (EventSource cannot send headers).
    events(m) {
      const u = this.href(m.events_url);
      const es = (this.es = new EventSource(`${u}${u.includes("?") ? "&" : "?"}token=${encodeURIComponent(m.token)}`));
      const on = (e) => {
        let ev;
        try {
          ev = JSON.parse(e.data) || {};
        } catch (x) {
          return;
        }
        if (typeof ev.type !== "string" || this.seen.has(ev.id)) return;
        if (ev.id) this.seen.add(ev.id);
        this.emit(ev.type, ev);
        if (ev.type !== "call.ended") return;
        const c = ev.call || {};
        if (typeof c.summary === "string") this.summary = c.summary;
        this.closeEvents();
        if (LIVE.includes(this.st)) this.finish(c.end_reason || "ended", ENDED[c.end_reason]);
        else if (busy(this.st)) {
          // Ended before it connected (e.g. the media token expired).
          this.failed(fail(c.end_reason || "ended", c.end_reason === "token_expired" ? "text-expired" : "text-failed"));
        } else this.render();
      };
      es.onmessage = on; // every event is unnamed; its type is in the data
      es.onerror = () => es.readyState === 2 && console.warn("[webcall] lifecycle events stopped; the call goes on.");
    }

    closeEvents() {
      if (this.es) this.es.close();
      this.es = null;
      this.clear("events");
    }

    end(reason = "hangup", key, unloading) {
      if (!busy(this.st)) return;
      this.hangup(unloading);
      this.finish(reason, key);
    }

    hangup(keepalive) {
      const { loc, auth, mint } = this;
      if (loc) fetch(loc, { method: "DELETE", headers: auth, keepalive }).catch(noop);
      const headers = { Authorization: "Bearer " + (mint && mint.token) };
      if (mint && mint.end_url) fetch(this.href(mint.end_url), { method: "POST", headers, keepalive }).catch(noop);
    }

    finish(reason, key = "text-ended") {
      if (!busy(this.st)) return;
      this.teardown();
      this.set("ended", this.t(key));
      this.emit("ended", this.summary ? { reason, summary: this.summary } : { reason });
      // Wait a little for the summary.
      if (this.es) this.timer("events", () => this.closeEvents(), 30000);
    }

    failed(e) {
      if (!e.key) {
        console.warn("[webcall] the call failed:", e);
        e = fail("connect_failed", "text-failed");
      }
      if (this.mint) this.hangup(); // free the call on the server
      this.teardown();
      this.closeEvents();
      const message = this.t(e.key).replace("{s}", e.s || 60);
      this.set("error", message);
      this.emit("error", { code: e.code, message, fatal: true });
    }

    // Close all a call opened, but the event stream.
    teardown() {
      if (this.ac) this.ac.abort();
      for (const k in this.tm) if (k !== "events") this.clear(k);
      cancelAnimationFrame(this.raf);
      if (this.dc) this.dc.onclose = this.dc.onmessage = null;
      if (this.pc) this.pc.close();
      stop(this.mic);
      if (this.ctx) this.ctx.close().catch(noop);
      this.$.audio.pause();
      this.$.audio.srcObject = null;
      removeEventListener("pagehide", this.onHide);
      this.#screenWakeLock.release();
      this.#stopFollowingInputDevices();
      this.#meterAnalyser = this.#meterSource = null;
      Object.assign(this, { ac: null, dc: null, pc: null, mic: null, ctx: null, loc: "", muted: false });
      this.level(0);
    }

    // A headset plugged in or out mid-call: the browser fires "devicechange", and a microphone that went away ends its
    // track. Either way, ask again for the default input and swap the new track into the call.
    #followInputDevices(track) {
      navigator.mediaDevices.addEventListener("devicechange", this.#onInputDevicesChanged);
      track.addEventListener("ended", this.#onInputDevicesChanged);
    }

    #stopFollowingInputDevices() {
      if (navigator.mediaDevices) {
        navigator.mediaDevices.removeEventListener("devicechange", this.#onInputDevicesChanged);
      }
      const track = this.track();
      if (track) track.removeEventListener("ended", this.#onInputDevicesChanged);
      this.#microphoneSender = null;
    }

    // RTCRtpSender.replaceTrack changes the microphone without renegotiating; the mute state carries over.
    async #switchMicrophone() {
      const sender = this.#microphoneSender;
      if (!sender || this.#switchingMicrophone) return;
      this.#switchingMicrophone = true;
      try {
        const oldStream = this.mic;
        const oldTrack = this.track();
        const newStream = await navigator.mediaDevices.getUserMedia({ audio: AUDIO_CONSTRAINTS });
        const newTrack = newStream.getAudioTracks()[0];
        const oldTrackWorks = oldTrack && oldTrack.readyState === "live";
        const sameDevice = oldTrackWorks && newTrack.getSettings().deviceId === oldTrack.getSettings().deviceId;
        if (sameDevice || sender !== this.#microphoneSender || this.mic !== oldStream) {
          stop(newStream); // nothing changed for this call, or the call ended meanwhile
          return;
        }
        newTrack.enabled = !this.muted;
        await sender.replaceTrack(newTrack);
        if (oldTrack) oldTrack.removeEventListener("ended", this.#onInputDevicesChanged);
        newTrack.addEventListener("ended", this.#onInputDevicesChanged);
        this.mic = newStream;
        stop(oldStream);
        if (this.#meterSource && this.ctx) {
          this.#meterSource.disconnect();
          this.#meterSource = this.ctx.createMediaStreamSource(newStream);
          this.#meterSource.connect(this.#meterAnalyser);
        }
        this.emit("microphone", { label: newTrack.label });
      } catch (error) {
        console.warn(`[webcall] could not switch to the new microphone (${error.name}); the call keeps the old one.`);
      } finally {
        this.#switchingMicrophone = false;
      }
    }

    showForm(on) {
      if (on) this.end("callback");
      this.view = on;
      txt(this.$.err, "");
      this.render();
      (on ? this.$.phone : this.#blocker ? this.$.cbLink : this.$.go).focus();
    }

    async callback(e) {
      e.preventDefault();
      const $ = this.$;
      const phone = $.phone.value.replace(/[\s().-]/g, "");
      const badPhone = !/^\+[1-9]\d{6,14}$/.test(phone);
      const bad = badPhone ? "text-invalid-phone" : $.agree.checked ? "" : "text-consent-required";
      $.phone.setAttribute("aria-invalid", badPhone);
      txt($.err, bad && this.t(bad));
      if (bad) return (badPhone ? $.phone : $.agree).focus();
      const agent = this.getAttribute("agent") || "";
      const detail = { agent, phone_number: phone, consent: true, variables: this.vars() };
      if (!this.emit("before-callback", detail, true)) return;
      const cb = (this.cb = new AbortController());
      $.send.disabled = true;
      try {
        const j = await this.post((this.mint && this.mint.callbacks_url) || "callbacks", detail, cb.signal);
        $.form.reset();
        this.view = false;
        this.note = "text-callback-sent";
        this.set("idle");
        this.emit("callback", j);
        $.go.focus();
      } catch (x) {
        if (cb.signal.aborted) return;
        txt($.err, this.t(x.key || "text-unavailable").replace("{s}", x.s || 60));
        if (x.code === "invalid_phone_number") $.phone.focus();
      }
      $.send.disabled = false;
    }
  }

  customElements.get(TAG) || customElements.define(TAG, WebCall);

  // Zero-markup: <script data-agent=…> adds a floating widget.
  if (SCRIPT && SCRIPT.hasAttribute("data-agent")) {
    const add = () => {
      const el = document.createElement(TAG);
      el.setAttribute("floating", "true");
      el.setAttribute("endpoint", BASE);
      for (const { name, value } of SCRIPT.attributes)
        if (/^data-(?!on|style$)/.test(name)) el.setAttribute(name.slice(5), value);
      document.body.append(el);
    };
    if (document.body) add();
    else addEventListener("DOMContentLoaded", add);
  }
})();
