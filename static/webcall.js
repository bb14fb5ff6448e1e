/*! <dialnexa-webcall>: a DialNexa voice call on any page. MIT licence. See the README for attributes, events
 * (webcall:*), methods start() end() mute(), --webcall-* properties and parts; every visible string is in T. */
(() => {
  "use strict";

  const TAG = "dialnexa-webcall";
  const SCRIPT = document.currentScript;
  // Served as {prefix}/widget.js: the plugin's routes are its siblings.
  const BASE = SCRIPT && SCRIPT.src ? new URL(".", SCRIPT.src).href : "/webcall/";

  // Visible strings; an attribute of the same name overrides each.
  const TEXTS = {
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
    "text-ticket": "This call link has expired. Reload the page to try again.",
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
  const busy = (state) => BUSY.includes(state);
  const noop = () => {};

  const MIC = "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3";
  const MIC_OFF = MIC + "M4 4l16 16";
  const CLOSE = "M6 6l12 12M18 6 6 18";
  const VOLUME = "M4 9v6h4l5 4V5L8 9zm12.5-.5a5 5 0 0 1 0 7";
  const PHONE =
    "M6.6 3.2 4 4.5C3 5 2.6 6 3 7c2.4 6.4 7.6 11.6 14 14 1 .4 2 0 2.5-1l1.3-2.6c.3-.6 0-1.3-.6-1.6l-3.4-1.7" +
    "c-.5-.3-1.2-.1-1.5.4l-.9 1.3c-2.7-1.2-4.9-3.4-6.1-6.1l1.3-.9c.5-.3.7-1 .4-1.5L8.2 3.8c-.3-.6-1-.9-1.6-.6z";

  // element("tag.class@part", attributes, ...children); buttons default to type=button.
  const element = (spec, attributes = {}, ...children) => {
    const [, tag, className, part] = spec.match(/(\w+)\.?([\w ]*)@?([\w-]*)/);
    const created = document.createElement(tag);
    if (className) created.className = className;
    if (part) created.setAttribute("part", part);
    if (tag === "button") created.type = "button";
    for (const name in attributes) created.setAttribute(name, attributes[name]);
    created.append(...children);
    return created;
  };
  const SVG_NAMESPACE = "http://www.w3.org/2000/svg";
  // An icon that keeps its size and line style without the stylesheet (width, height and presentation attributes):
  // an unstyled widget must not draw a page-wide black disc. `filled` icons are solid shapes.
  const svg = (pathData, { filled = false } = {}) => {
    const icon = document.createElementNS(SVG_NAMESPACE, "svg");
    const path = document.createElementNS(SVG_NAMESPACE, "path");
    const iconAttributes = { viewBox: "0 0 24 24", width: 20, height: 20, "aria-hidden": "true", fill: "none",
      stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" };
    for (const name in iconAttributes) icon.setAttribute(name, iconAttributes[name]);
    path.setAttribute("d", pathData);
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
  const setText = (target, text) => {
    if (target.textContent !== text) target.textContent = text;
  };
  const stop = (stream) => stream && stream.getTracks().forEach((track) => track.stop());
  // A failure the widget shows: a machine code, the message key, and (for rate limits) the seconds to wait.
  const fail = (code, key, retryAfter) => Object.assign(new Error(code), { code, key, retryAfter });
  // Await ICE gathering (no trickle), at most `limitMs`; with `quick` (host candidates only), until a 25 ms lull.
  const gathered = (connection, limitMs, { quick = false } = {}) =>
    new Promise((done) => {
      let timer = setTimeout(done, limitMs);
      connection.onicecandidate = (event) => {
        if (!event.candidate) done();
        else if (quick) {
          clearTimeout(timer);
          timer = setTimeout(done, 25);
        }
      };
      if (connection.iceGatheringState === "complete") done();
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
      return ["floating", "consent", "callback", ...Object.keys(TEXTS)];
    }

    constructor() {
      super();
      Object.assign(this, { currentState: "idle", msg: "", open: false, muted: false, view: false, note: "", summary: "" });
      this.timers = {}; // named timers
      this.lines = {}; // each role's non-final transcript line
      this.seen = new Set(); // lifecycle event ids
      this.onHide = () => this.end("pagehide", undefined, true);
      const root = this.attachShadow({ mode: "open" });
      adoptStyles(root);
      // render() fills data-t (text) and data-l (accessible name) from T.
      const $ = (this.$ = {});
      const text = (spec, key, attrs) => element(spec, { ...attrs, "data-t": key });
      const listen = (target, type, handler) => target.addEventListener(type, handler);

      $.launch = element("button.launch@launcher", { "data-l": "label-open", "aria-controls": "p" }, svg(MIC));
      $.status = element("span@status", { role: "status", "aria-live": "polite" });
      $.timer = element("span.tm@timer");
      $.close = element("button.x@close", { "data-l": "label-close" }, svg(CLOSE));
      $.intro = text("p@intro", "text-intro");
      $.note = element("p.note@note");
      const logAttrs = { role: "log", "aria-live": "polite", tabindex: 0, "data-l": "label-transcript" };
      $.log = element("div.log@transcript", logAttrs);
      $.sum = element("p.sum@summary", {}, text("strong", "label-summary"), ($.sumText = element("span")));

      $.phone = element("input", { id: "ph", type: "tel", autocomplete: "tel", "aria-describedby": "hi er" });
      $.agree = element("input", { type: "checkbox" });
      $.err = element("p.err", { id: "er", role: "alert" });
      $.back = text("button.link", "label-back");
      $.form = element(
        "form@callback",
        { novalidate: "" },
        text("p", "text-callback"),
        element("div", {}, text("label", "label-phone", { for: "ph" }), $.phone),
        text("p.fine", "text-phone-hint", { id: "hi" }),
        element("label.chk", {}, $.agree, text("span", "text-callback-consent")),
        $.err,
        ($.send = text("button.btn", "label-send", { type: "submit" })),
        $.back
      );

      $.mute = element("button.ic@mute", { "data-l": "label-mute" }, svg(MIC));
      $.meter = element("span.meter@meter", { "aria-hidden": "true" }, element("i"));
      $.vol = element("input", { type: "range", min: 0, max: 1, step: 0.05, value: 1 });
      $.hang = element("button.ic end@hangup", { "data-l": "label-end" }, svg(PHONE, { filled: true }));
      $.go = element("button.btn@button", {}, svg(PHONE, { filled: true }), ($.goText = element("span")));
      $.consent = element("p.fine@consent");
      $.cbLink = text("button.link@callback-link", "label-callback");
      $.ctl = element(
        "div.ctl@controls",
        {},
        $.mute,
        $.meter,
        element("label.vol@volume", {}, svg(VOLUME), text("span.sr", "label-volume"), $.vol),
        $.hang
      );
      const title = text("strong.ti@title", "text-title", { id: "t" });
      const header = element(
        "div.hd@header",
        {},
        element("span.orb@orb", {}, svg(MIC)),
        element("div.hx", {}, title, element("p.st", {}, $.status, $.timer)),
        $.close
      );
      const body = [$.intro, $.note, $.log, $.sum, $.form, $.ctl, $.go, $.consent, $.cbLink];
      $.panel = element("section.panel@panel", { id: "p", "aria-labelledby": "t" }, header, ...body);
      $.audio = element("audio", { autoplay: "" });
      root.append($.launch, $.panel, $.audio);

      listen($.launch, "click", () => this.toggle(!this.open));
      listen($.close, "click", () => this.toggle(false));
      listen($.go, "click", () => this.start());
      listen($.hang, "click", () => this.end());
      listen($.mute, "click", () => this.mute());
      listen($.vol, "input", () => ($.audio.volume = +$.vol.value));
      listen($.cbLink, "click", () => this.showForm(true));
      listen($.back, "click", () => this.showForm(false));
      listen($.form, "submit", (e) => this.callback(e));
      listen($.panel, "keydown", (e) => {
        if (e.key !== "Escape") return;
        if (busy(this.currentState)) this.end();
        else if (this.view) this.showForm(false);
        else if (this.floating) this.toggle(false);
      });
    }

    get state() {
      return this.currentState;
    }
    get floating() {
      return this.getAttribute("floating") === "true";
    }

    connectedCallback() {
      this.#blocker = callBlocker();
      if (this.#blocker) adviseSiteOwner(this.#blocker);
      this.setAttribute("state", this.currentState);
      this.msg = this.msg || this.phrase("text-idle");
      this.render();
    }
    disconnectedCallback() {
      this.end("removed");
      this.teardown();
      this.closeEvents();
      if (this.callbackController) this.callbackController.abort();
    }
    attributeChangedCallback() {
      if (this.isConnected) this.render();
    }

    phrase(key) {
      const value = this.getAttribute(key);
      return value === null ? TEXTS[key] : value;
    }

    vars() {
      const raw = this.getAttribute("variables");
      try {
        const parsed = JSON.parse(raw || "{}");
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) return parsed;
      } catch (e) {
        /* warned below */
      }
      console.warn('[webcall] the "variables" attribute must be a JSON object like {"name":"Ada"}; sending none.');
      return {};
    }

    // Resolve a route name or server URL against the endpoint.
    href(url) {
      return new URL(url, new URL(this.getAttribute("endpoint") || BASE, location.href).href.replace(/\/*$/, "/")).href;
    }

    emit(type, detail, cancelable = false) {
      return this.dispatchEvent(
        new CustomEvent("webcall:" + type, { detail, bubbles: true, composed: true, cancelable })
      );
    }

    timer(name, callback, delayMs, repeat) {
      this.clear(name);
      this.timers[name] = (repeat ? setInterval : setTimeout)(callback, delayMs);
    }
    clear(name) {
      clearTimeout(this.timers[name]); // intervals too
      delete this.timers[name];
    }

    set(state, msg) {
      const was = this.currentState;
      const focused = document.activeElement;
      const ours = focused === this || !focused || focused === document.body;
      this.currentState = state;
      this.msg = msg || this.phrase("text-" + state);
      this.setAttribute("state", state);
      this.render();
      if (state === was) return;
      this.emit("state", { state });
      // Focus hang-up during a call, start after it.
      if (ours && busy(state) !== busy(was)) (busy(state) ? this.$.hang : this.$.go).focus();
    }

    render() {
      const { $, currentState: state, view } = this;
      const root = this.shadowRoot;
      const inCall = busy(state);
      const live = LIVE.includes(state);
      const track = this.track();
      const consent = this.getAttribute("consent") || "";
      const mic = this.note === "text-no-mic";
      $.launch.dataset.l = this.open ? "label-close" : "label-open";
      $.launch.firstChild.firstChild.setAttribute("d", this.open ? CLOSE : MIC);
      $.launch.setAttribute("aria-expanded", this.open);
      $.goText.dataset.t = state === "error" ? "label-retry" : state === "ended" ? "label-restart" : "label-start";
      $.mute.title = this.phrase(this.muted ? "label-unmute" : "label-mute");
      $.mute.firstChild.firstChild.setAttribute("d", this.muted || !track ? MIC_OFF : MIC);
      $.mute.setAttribute("aria-pressed", this.muted);
      $.mute.disabled = !track;
      for (const node of root.querySelectorAll("[data-t]")) setText(node, this.phrase(node.dataset.t));
      for (const node of root.querySelectorAll("[data-l]")) {
        node.setAttribute("aria-label", this.phrase(node.dataset.l));
        if (node.localName === "button" && node !== $.mute) node.title = this.phrase(node.dataset.l);
      }
      const blocker = this.#blocker;
      setText($.status, state === "idle" && blocker ? this.phrase(blocker) : this.msg);
      setText($.note, this.note && this.phrase(this.note));
      setText($.sumText, this.summary);
      setText($.consent, consent);
      const shown = [
        [$.launch, this.floating],
        [$.close, this.floating],
        [$.panel, !this.floating || this.open],
        [$.timer, live],
        // The intro invites a call in the browser: not where the browser can't make one.
        [$.intro, state === "idle" && !view && !blocker && $.intro.textContent],
        [$.note, this.note && !view && state !== "error"],
        [$.log, !view],
        [$.sum, state === "ended" && this.summary && !view],
        [$.form, view],
        [$.ctl, inCall && !view],
        [$.go, !inCall && !view && !blocker],
        [$.consent, consent && !inCall && !view],
        [$.cbLink, !view && (inCall ? live && mic : this.getAttribute("callback") === "true" || mic || !!blocker)],
      ];
      for (const [part, show] of shown) part.hidden = !show;
      // Without a way to call here, "call me back" is the main action.
      $.cbLink.className = blocker ? "btn" : "link";
    }

    toggle(open) {
      this.open = open;
      this.render();
      const $ = this.$;
      const main = this.#blocker ? $.cbLink : $.go;
      (open ? (busy(this.currentState) ? $.hang : this.view ? $.phone : main) : $.launch).focus();
    }

    track() {
      return this.mic ? this.mic.getAudioTracks()[0] : null;
    }

    mute(wanted = !this.muted) {
      const track = this.track();
      const muted = !!track && !!wanted;
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
      if (busy(this.currentState)) return;
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
      const controller = (this.startController = new AbortController());
      const signal = controller.signal;
      // The peer connection comes first: its offer travels with the start request while the visitor answers the
      // microphone prompt, and the microphone joins the call (replaceTrack) when it is allowed.
      const connection = this.#openPeerConnection();
      const microphoneRequest = navigator.mediaDevices
        .getUserMedia({ audio: AUDIO_CONSTRAINTS })
        .catch((e) => {
          if (signal.aborted) return null;
          // Go on receive-only, and offer a call back.
          this.note = "text-no-mic";
          console.warn(`[webcall] no microphone (${e.name}), so the call is receive-only; allow it to talk.`);
          this.emit("error", { code: "microphone_unavailable", message: this.phrase(this.note), fatal: false });
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
        await connection.setLocalDescription(await connection.createOffer());
        await gathered(connection, 1500, { quick: true });
        if (signal.aborted) return;
        // One request: the plugin starts the call at DialNexa and answers with DialNexa's SDP answer.
        const starting = this.post("sessions", { ...detail, offer: connection.localDescription.sdp }, signal);
        starting.catch(noop); // awaited below
        const mic = await microphoneRequest;
        if (signal.aborted) return stop(mic);
        this.mic = mic;
        const track = this.track();
        if (track) {
          await this.#microphoneSender.replaceTrack(track);
          this.#followInputDevices(track);
        }
        this.set("connecting");
        const started = (this.mint = await starting);
        if (started.events_url && started.token) this.events(started);
        this.mediaUrl = started.media_url ? this.href(started.media_url) : "";
        this.auth = { Authorization: "Bearer " + started.token };
        if (typeof started.answer !== "string") throw fail("invalid_response", "text-unavailable");
        await connection.setRemoteDescription({ type: "answer", sdp: started.answer });
        this.timer("connect", () => this.failed(fail("connect_timeout", "text-failed")), 15000);
      } catch (e) {
        if (!signal.aborted) this.failed(e);
      }
    }

    // A send-and-receive audio transceiver (the microphone is attached later) and the "events" data channel.
    #openPeerConnection() {
      const connection = (this.connection = new RTCPeerConnection());
      this.#microphoneSender = connection.addTransceiver("audio", { direction: "sendrecv" }).sender;
      const channel = (this.channel = connection.createDataChannel("events"));
      channel.onmessage = (e) => this.onData(e.data);
      channel.onclose = () => LIVE.includes(this.currentState) && this.finish("remote_hangup");
      // Agent audio via <audio>, not WebAudio, so echo cancellation hears it.
      connection.ontrack = (e) => {
        this.$.audio.srcObject = e.streams[0] || new MediaStream([e.track]);
        this.$.audio.play().catch(noop);
      };
      connection.onconnectionstatechange = () => this.onConnection();
      return connection;
    }

    // The page's call ticket, if it set one, goes with the request; read now, so the page may replace it any time.
    async post(path, body, signal) {
      const url = this.href(path);
      const ticket = this.getAttribute("ticket");
      const payload = ticket ? { ...body, ticket } : body;
      const init = { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin" };
      const response = await fetch(url, { ...init, body: JSON.stringify(payload), signal }).catch((e) => {
        if (signal.aborted) throw e;
        console.warn(`[webcall] could not reach ${url} (${e.message}): check the endpoint attribute and the network.`);
        throw fail("network_error", "text-unavailable");
      });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) return answer;
      const code = answer.code || "http_" + response.status;
      const hint = HINTS[code] ? `; ${HINTS[code]}.` : "";
      console.warn(`[webcall] POST ${url} → ${response.status} ${code}: ${answer.message || response.statusText}${hint}`);
      let key = CODES[code] || (response.status < 500 ? "not-available" : "unavailable");
      if (/^ticket_/.test(code)) key = "ticket"; // a refused call ticket: a reload gives the page a new one
      throw fail(code, "text-" + key, +response.headers.get("Retry-After"));
    }

    onConnection() {
      const connectionState = this.connection ? this.connection.connectionState : "closed";
      const state = this.currentState;
      if (connectionState === "connected") {
        this.clear("connect");
        if (state === "connecting") this.live();
        else if (this.timers.grace) {
          this.clear("grace");
          this.set(state);
        }
      } else if (connectionState === "failed" && state === "connecting") {
        this.failed(fail("connect_failed", "text-failed"));
      } else if (/failed|disconnected/.test(connectionState) && LIVE.includes(state) && !this.timers.grace) {
        // Grace period for the network; try an ICE restart.
        this.set(state, this.phrase("text-reconnecting"));
        // No hang-up request: the network is gone, and DialNexa records the call as a network failure.
        this.timer("grace", () => this.finish("connection_lost", "text-lost"), 5000);
        this.restartIce();
      }
    }

    // RFC 9725 §4.3 ICE restart through the plugin's media resource; 405 = unsupported.
    async restartIce() {
      const connection = this.connection;
      if (!this.mediaUrl || this.noPatch) return;
      try {
        await connection.setLocalDescription(await connection.createOffer({ iceRestart: true }));
        await gathered(connection, 1000);
        const fragment = connection.localDescription.sdp.match(/^(a=ice-(ufrag|pwd|options)|m=|a=mid|a=candidate).*\r\n/gm);
        const response = await fetch(this.mediaUrl, {
          method: "PATCH",
          headers: { ...this.auth, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" },
          body: fragment.join(""),
        });
        this.noPatch = response.status === 405 || response.status === 501;
        const iceAnswer = response.status === 200 ? await response.text() : "";
        const ice = (name) => (iceAnswer.match(new RegExp(`a=ice-${name}:\\S+`)) || [])[0];
        if (!ice("ufrag") || !ice("pwd") || this.connection !== connection) throw new Error("no ICE restart answer");
        const sdp = connection.remoteDescription.sdp.replace(/a=ice-ufrag:\S+/g, ice("ufrag"));
        await connection.setRemoteDescription({ type: "answer", sdp: sdp.replace(/a=ice-pwd:\S+/g, ice("pwd")) });
        for (const candidate of iceAnswer.match(/^a=candidate:.*/gm) || [])
          connection.addIceCandidate({ candidate: candidate.slice(2), sdpMLineIndex: 0 }).catch(noop);
      } catch (e) {
        if (connection.signalingState === "have-local-offer") connection.setLocalDescription({ type: "rollback" }).catch(noop);
      }
    }

    live() {
      const startedAt = Date.now();
      const { $, mint, ctx, mic } = this;
      const tick = () => {
        const seconds = Math.floor((Date.now() - startedAt) / 1000);
        setText($.timer, `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
      };
      tick();
      this.timer("clock", tick, 1000, true);
      const max = mint.max_call_seconds;
      if (max > 0) this.timer("max", () => this.end("max_duration", "text-max"), max * 1000);
      this.set("listening");
      this.#screenWakeLock.acquire();
      // Level meter of the local microphone only.
      if (!ctx || !mic) return;
      const analyser = (this.#meterAnalyser = ctx.createAnalyser());
      const samples = new Float32Array((analyser.fftSize = 512));
      let level = 0;
      this.#meterSource = ctx.createMediaStreamSource(mic);
      this.#meterSource.connect(analyser);
      const loop = () => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const sample of samples) sum += sample * sample;
        level = this.muted ? 0 : Math.max(Math.min(1, Math.sqrt(sum / samples.length) * 5), level * 0.9);
        this.level(level);
        this.raf = requestAnimationFrame(loop);
      };
      loop();
    }

    level(value) {
      this.$.meter.style.setProperty("--l", value.toFixed(2));
    }

    onData(raw) {
      let message;
      try {
        message = JSON.parse(raw) || {};
      } catch (e) {
        return;
      }
      if (message.type === "agent_state") {
        if (LIVE.includes(message.state) && LIVE.includes(this.currentState) && !this.timers.grace) this.set(message.state);
      } else if (message.type === "transcript" && typeof message.text === "string") {
        this.line(message.role === "user" ? "user" : "agent", message.text, message.final !== false);
      } else if (message.type === "call_ended") {
        this.finish(message.reason || "agent_hangup", ENDED[message.reason]);
      }
    }

    line(role, text, final) {
      const log = this.$.log;
      const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      let line = this.lines[role];
      if (!line) {
        const who = element("span.sr", {}, this.phrase(role === "user" ? "label-you" : "label-agent") + ": ");
        line = this.lines[role] = element(role === "user" ? "p.u" : "p.a", { dir: "auto" }, who, "");
        log.append(line);
        if (log.childElementCount > 200) log.firstChild.remove();
      }
      line.lastChild.data = text;
      line.classList.toggle("p", !final);
      if (final) this.lines[role] = null;
      if (stick) log.scrollTop = log.scrollHeight;
      this.emit("transcript", { role, text, final });
    }

    // SSE lifecycle events (EventSource cannot send headers).
    events(started) {
      const url = this.href(started.events_url);
      const source = (this.eventSource = new EventSource(`${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(started.token)}`));
      const onEvent = (e) => {
        let payload;
        try {
          payload = JSON.parse(e.data) || {};
        } catch (error) {
          return;
        }
        if (typeof payload.type !== "string" || this.seen.has(payload.id)) return;
        if (payload.id) this.seen.add(payload.id);
        this.emit(payload.type, payload);
        if (payload.type !== "call.ended") return;
        const call = payload.call || {};
        if (typeof call.summary === "string") this.summary = call.summary;
        this.closeEvents();
        if (LIVE.includes(this.currentState)) this.finish(call.end_reason || "ended", ENDED[call.end_reason]);
        else if (busy(this.currentState)) {
          // Ended before it connected (e.g. the media token expired).
          this.failed(fail(call.end_reason || "ended", call.end_reason === "token_expired" ? "text-expired" : "text-failed"));
        } else this.render();
      };
      source.onmessage = onEvent; // every event is unnamed; its type is in the data
      source.onerror = () => source.readyState === 2 && console.warn("[webcall] lifecycle events stopped; the call goes on.");
    }

    closeEvents() {
      if (this.eventSource) this.eventSource.close();
      this.eventSource = null;
      this.clear("events");
    }

    end(reason = "hangup", key, unloading) {
      if (!busy(this.currentState)) return;
      this.hangup(unloading);
      this.finish(reason, key);
    }

    hangup(keepalive) {
      const { mediaUrl, auth, mint } = this;
      if (mediaUrl) fetch(mediaUrl, { method: "DELETE", headers: auth, keepalive }).catch(noop);
      const headers = { Authorization: "Bearer " + (mint && mint.token) };
      if (mint && mint.end_url) fetch(this.href(mint.end_url), { method: "POST", headers, keepalive }).catch(noop);
    }

    finish(reason, key = "text-ended") {
      if (!busy(this.currentState)) return;
      this.teardown();
      this.set("ended", this.phrase(key));
      this.emit("ended", this.summary ? { reason, summary: this.summary } : { reason });
      // Wait a little for the summary.
      if (this.eventSource) this.timer("events", () => this.closeEvents(), 30000);
    }

    failed(e) {
      if (!e.key) {
        console.warn("[webcall] the call failed:", e);
        e = fail("connect_failed", "text-failed");
      }
      if (this.mint) this.hangup(); // free the call on the server
      this.teardown();
      this.closeEvents();
      const message = this.phrase(e.key).replace("{s}", e.retryAfter || 60);
      this.set("error", message);
      this.emit("error", { code: e.code, message, fatal: true });
    }

    // Close all a call opened, but the event stream.
    teardown() {
      if (this.startController) this.startController.abort();
      for (const name in this.timers) if (name !== "events") this.clear(name);
      cancelAnimationFrame(this.raf);
      if (this.channel) this.channel.onclose = this.channel.onmessage = null;
      if (this.connection) this.connection.close();
      stop(this.mic);
      if (this.ctx) this.ctx.close().catch(noop);
      this.$.audio.pause();
      this.$.audio.srcObject = null;
      removeEventListener("pagehide", this.onHide);
      this.#screenWakeLock.release();
      this.#stopFollowingInputDevices();
      this.#meterAnalyser = this.#meterSource = null;
      Object.assign(this, { startController: null, channel: null, connection: null, mic: null, ctx: null, mediaUrl: "", muted: false });
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

    showForm(visible) {
      if (visible) this.end("callback");
      this.view = visible;
      setText(this.$.err, "");
      this.render();
      (visible ? this.$.phone : this.#blocker ? this.$.cbLink : this.$.go).focus();
    }

    async callback(e) {
      e.preventDefault();
      const $ = this.$;
      const phone = $.phone.value.replace(/[\s().-]/g, "");
      const badPhone = !/^\+[1-9]\d{6,14}$/.test(phone);
      const bad = badPhone ? "text-invalid-phone" : $.agree.checked ? "" : "text-consent-required";
      $.phone.setAttribute("aria-invalid", badPhone);
      setText($.err, bad && this.phrase(bad));
      if (bad) return (badPhone ? $.phone : $.agree).focus();
      const agent = this.getAttribute("agent") || "";
      const detail = { agent, phone_number: phone, consent: true, variables: this.vars() };
      if (!this.emit("before-callback", detail, true)) return;
      const controller = (this.callbackController = new AbortController());
      $.send.disabled = true;
      try {
        const answer = await this.post((this.mint && this.mint.callbacks_url) || "callbacks", detail, controller.signal);
        $.form.reset();
        this.view = false;
        this.note = "text-callback-sent";
        this.set("idle");
        this.emit("callback", answer);
        $.go.focus();
      } catch (error) {
        if (controller.signal.aborted) return;
        setText($.err, this.phrase(error.key || "text-unavailable").replace("{s}", error.retryAfter || 60));
        if (error.code === "invalid_phone_number") $.phone.focus();
      }
      $.send.disabled = false;
    }
  }

  customElements.get(TAG) || customElements.define(TAG, WebCall);

  // Zero-markup: <script data-agent=…> adds a floating widget.
  if (SCRIPT && SCRIPT.hasAttribute("data-agent")) {
    const add = () => {
      const widget = document.createElement(TAG);
      widget.setAttribute("floating", "true");
      widget.setAttribute("endpoint", BASE);
      for (const { name, value } of SCRIPT.attributes)
        if (/^data-(?!on|style$)/.test(name)) widget.setAttribute(name.slice(5), value);
      document.body.append(widget);
    };
    if (document.body) add();
    else addEventListener("DOMContentLoaded", add);
  }
})();
