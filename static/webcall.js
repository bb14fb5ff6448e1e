/*! <dialnexa-webcall>: a DialNexa voice call on any page. MIT licence. */

// The README documents its attributes, events (webcall:*), methods start() end() mute(), --webcall-* properties and
// parts; every visible string is in TEXTS.

// How this file is laid out (one script, no dependencies; the plugin serves it minified):
//   1. Constants and small helpers: the visible texts (TEXTS), error codes, icons, element() and icon(), CallError,
//      and the checks of what the page allows.
//   2. WebCall, the <dialnexa-webcall> element: attributes, rendering, the states the visitor sees, the texts and the
//      call-back form. For each call it creates a MediaConnection, a Microphone and a CallEventStream and drives them.
//   3. MediaConnection: the WebRTC side of one call and its media resource on the plugin (offer, trickled candidates,
//      answer, ICE restart, hang-up, recovery from a network blip). It reports through callbacks and never touches
//      the page. CallQuality: the call's getStats() samples, the weak-connection verdict and the end-of-call summary.
//   4. Microphone: the visitor's microphone during one call (permission, a headset plugged in or out, mute, level).
//   5. CallEventStream: the call's lifecycle events from the plugin (server-sent events).
//   6. ScreenWakeLock: keeps the screen on during a call.
//   7. STYLESHEET, adopted by every shadow root (so it passes a strict CSP), and adoptStylesheet().
//   8. The element's definition, and the zero-markup form: <script data-agent=…> adds a floating widget.
// The classes are defined before the element is (section 8), which is when the page's widgets are built.
(() => {
  "use strict";

  const TAG = "dialnexa-webcall";
  const SCRIPT = document.currentScript;
  // Served as {prefix}/widget.js: the plugin's routes are its siblings.
  const DEFAULT_ENDPOINT = SCRIPT && SCRIPT.src ? new URL(".", SCRIPT.src).href : "/webcall/";

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
    "text-blocked": "This network seems to block calls. Try another network, or we can call you back.",
    "text-weak": "Weak connection: the agent may break up.",
    "text-ticket": "This call link has expired. Reload the page to try again.",
    "text-callback": "Leave your number and we'll call you.",
    "text-phone-hint": "International format, e.g. +14155550123",
    "text-callback-consent": "I agree to receive a call at this number.",
    "text-callback-sent": "Thanks! We'll call you shortly.",
    "text-invalid-phone": "Enter your number in international format, e.g. +14155550123.",
    "text-number-refused": "Sorry, we can't call this number.",
    "text-consent-required": "Please tick the box to agree to the call.",
  };

  // The message for an error code of the plugin; see errorTextKey() for the others.
  const ERROR_TEXT_KEYS = {
    call_expired: "text-expired",
    rate_limited: "text-rate-limited",
    http_429: "text-rate-limited",
    capacity_reached: "text-busy",
    unauthorized: "text-forbidden",
    forbidden: "text-forbidden",
    bot_check_failed: "text-forbidden",
    invalid_phone_number: "text-invalid-phone",
    callback_not_allowed: "text-number-refused",
    consent_required: "text-consent-required",
  };
  // The message for a refused request: by its code; a refused call ticket (ticket_required, ticket_expired, …) asks
  // for a reload, which gives the page a new ticket; anything else by its status.
  const errorTextKey = (code, status) => {
    if (ERROR_TEXT_KEYS[code]) return ERROR_TEXT_KEYS[code];
    if (/^ticket_/.test(code)) return "text-ticket";
    return status < 500 ? "text-not-available" : "text-unavailable";
  };
  // What the site owner reads in the console after a refusal they can fix.
  const ERROR_ADVICE = {
    origin_not_allowed: `add ${location.origin} to the plugin's allowed origins`,
    unknown_agent: "set agent to an alias configured on the server",
  };
  // Server end reasons with a message of their own.
  const END_REASON_TEXT_KEYS = { network_failure: "text-lost", max_duration_reached: "text-max" };
  // What a quality summary may name (webcall/quality.py refuses anything else).
  const CANDIDATE_TYPES = ["host", "srflx", "prflx", "relay"];
  const PROTOCOLS = ["udp", "tcp", "tls"];
  // The start button's label after a call.
  const START_LABEL_KEYS = { error: "label-retry", ended: "label-restart" };

  const LIVE_STATES = ["listening", "thinking", "speaking"];
  const CALL_STATES = ["microphone", "connecting", ...LIVE_STATES];
  const isLive = (state) => LIVE_STATES.includes(state);
  const isInCall = (state) => CALL_STATES.includes(state);
  const ignore = () => {};

  // Icons: SVG path data on a 24 × 24 grid.
  const MICROPHONE_ICON = "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3";
  const MICROPHONE_OFF_ICON = MICROPHONE_ICON + "M4 4l16 16";
  const CLOSE_ICON = "M6 6l12 12M18 6 6 18";
  const VOLUME_ICON = "M4 9v6h4l5 4V5L8 9zm12.5-.5a5 5 0 0 1 0 7";
  const PHONE_ICON =
    "M6.6 3.2 4 4.5C3 5 2.6 6 3 7c2.4 6.4 7.6 11.6 14 14 1 .4 2 0 2.5-1l1.3-2.6c.3-.6 0-1.3-.6-1.6l-3.4-1.7" +
    "c-.5-.3-1.2-.1-1.5.4l-.9 1.3c-2.7-1.2-4.9-3.4-6.1-6.1l1.3-.9c.5-.3.7-1 .4-1.5L8.2 3.8c-.3-.6-1-.9-1.6-.6z";

  // A new element with these attributes and children; a button is type=button unless its attributes say otherwise.
  const element = (tagName, attributes = {}, ...children) => {
    const created = document.createElement(tagName);
    if (tagName === "button") created.type = "button";
    for (const name in attributes) created.setAttribute(name, attributes[name]);
    created.append(...children);
    return created;
  };
  const SVG_NAMESPACE = "http://www.w3.org/2000/svg";
  // An icon that keeps its size and line style without the stylesheet (width, height and presentation attributes):
  // an unstyled widget must not draw a page-wide black disc. `filled` icons are solid shapes; `turned` ones are
  // drawn rotated by 135° (the hang-up handset), which holds without the stylesheet too.
  const icon = (pathData, { filled = false, turned = false } = {}) => {
    const svg = document.createElementNS(SVG_NAMESPACE, "svg");
    const path = document.createElementNS(SVG_NAMESPACE, "path");
    const svgAttributes = { viewBox: "0 0 24 24", width: 20, height: 20, "aria-hidden": "true", fill: "none",
      stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" };
    for (const name in svgAttributes) svg.setAttribute(name, svgAttributes[name]);
    path.setAttribute("d", pathData);
    if (turned) path.setAttribute("transform", "rotate(135 12 12)");
    if (filled) {
      path.setAttribute("fill", "currentColor");
      path.setAttribute("stroke", "none");
    }
    svg.append(path);
    return svg;
  };
  // Draws another icon in the button (the launcher's microphone becomes a cross, the mute button's is struck out).
  const setIcon = (button, pathData) => button.querySelector("path").setAttribute("d", pathData);
  // Write only changes, so live regions don't re-announce.
  const setText = (target, text) => {
    if (target.textContent !== text) target.textContent = text;
  };
  // The JSON object in `text`, or null when `text` is not one.
  const parseObject = (text) => {
    try {
      const value = JSON.parse(text);
      return value && typeof value === "object" && !Array.isArray(value) ? value : null;
    } catch (error) {
      return null;
    }
  };
  // A line for the site owner in the browser's console, marked as the widget's.
  const warn = (...parts) => console.warn("[webcall]", ...parts);
  const stopTracks = (stream) => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
  };

  // A failure the visitor is told about: a machine code (for the webcall:error event), the key of its message in
  // TEXTS, and for a rate limit the seconds to wait.
  class CallError extends Error {
    constructor(code, textKey, { retryAfterSeconds = 0 } = {}) {
      super(code);
      this.code = code;
      this.textKey = textKey;
      this.retryAfterSeconds = retryAfterSeconds;
    }
  }

  // Whether the page's permissions policy lets it use the microphone. Inside an <iframe> that the embedding page did
  // not give allow="microphone", getUserMedia fails with no hint at the cause; Chromium answers this up front.
  const frameAllowsMicrophone = () => {
    const policy = document.permissionsPolicy || document.featurePolicy;
    return !policy || typeof policy.allowsFeature !== "function" || policy.allowsFeature("microphone");
  };

  // Why this page cannot place a call (a message key), or "" when it can. The widget asks before the first click, so
  // a visitor who can't call is offered a call back instead of a start button that cannot work.
  const findCallBlocker = () => {
    if (!window.isSecureContext) return "text-insecure";
    const mediaDevices = navigator.mediaDevices;
    if (!mediaDevices || typeof mediaDevices.getUserMedia !== "function" || !window.RTCPeerConnection) {
      return "text-unsupported";
    }
    if (!frameAllowsMicrophone()) return "text-frame-blocked";
    return "";
  };
  // The code of the webcall:error event for each reason (else "unsupported").
  const BLOCKER_ERROR_CODES = { "text-insecure": "insecure_context", "text-frame-blocked": "microphone_blocked" };
  // What the site owner reads in the console about each reason, once per page.
  const BLOCKER_ADVICE = {
    "text-insecure": "calls need a secure page: serve it over https (localhost works too).",
    "text-unsupported":
      "this browser has no getUserMedia or RTCPeerConnection (an in-app or old browser): it offers a call back.",
    "text-frame-blocked":
      'this page is in an <iframe> without microphone access: add allow="microphone" to the <iframe> element ' +
      'that embeds it, e.g. <iframe src="…" allow="microphone">.',
  };
  const advisedBlockers = new Set();
  const adviseSiteOwner = (blocker) => {
    if (advisedBlockers.has(blocker)) return;
    advisedBlockers.add(blocker);
    warn(BLOCKER_ADVICE[blocker]);
  };

  // Where the stylesheet could not be adopted: where a floating widget stays, and how its panel stands out.
  const UNSTYLED_FLOATING = {
    position: "fixed", bottom: "16px", right: "16px", "z-index": "2147483000", "max-width": "22rem",
  };
  const UNSTYLED_PANEL = { background: "Canvas", color: "CanvasText", border: "1px solid", padding: "8px" };
  const setStyles = (target, declarations) => {
    for (const name in declarations) target.style.setProperty(name, declarations[name]);
  };

  // The <dialnexa-webcall> element. Its state (the `state` attribute and webcall:state) goes idle → microphone →
  // connecting → listening / thinking / speaking → ended, or error from any of them. It renders everything from its
  // fields in #render(); texts come from TEXTS unless an attribute of the same name overrides them. The public API is
  // start(), end(), mute(on?) and the `state` property; everything else is private.
  class WebCall extends HTMLElement {
    static MAX_TRANSCRIPT_LINES = 200;
    static SUMMARY_WAIT_MS = 30000;
    static ICE_SERVERS_KEPT_MS = 600000;

    // The shadow DOM's elements by name (see #createParts).
    #parts;
    #state = "idle";
    #statusText = "";
    #panelOpen = false;
    #formShown = false;
    // A note under the header: "text-no-mic" or "text-callback-sent" (a key of TEXTS), or "".
    #noteKey = "";
    #summary = "";
    #muted = false;
    // Why this page can't place a call (a message key), or "".
    #blocker = "";
    // The plugin's answer to the start request: the call's token, routes and limits.
    #session = null;
    #microphone = null;
    #connection = null;
    #eventStream = null;
    #reconnecting = false;
    // What the agent last said it was doing (agent_state), kept from before the call is live: its first message
    // may arrive before the browser reports the connection.
    #agentState = "listening";
    #startController = null;
    #callbackController = null;
    // Whether the plugin rings phones back: asked when a call back would first be offered (#askAboutCallbacks).
    #callbacksAsked = false;
    #callbacksOn = false;
    #clockTimer = 0;
    #maxDurationTimer = 0;
    // Each role's transcript line that is not final yet.
    #transcriptLines = {};
    #screenWakeLock = new ScreenWakeLock();
    // The ICE servers (STUN, TURN with short-lived credentials) from the plugin, asked for before the click.
    #iceServers = { promise: null, expiresAt: 0 };
    // While the call's connection is too weak for speech to be followed.
    #weakConnection = false;
    // The last call could not get through this network (no route for its audio): call-back is the way.
    #networkBlocked = false;
    #onPageHide = () => this.#endCall({ reason: "pagehide", unloading: true });
    // False where the browser could not adopt the stylesheet (see adoptStylesheet).
    #styled;

    static get observedAttributes() {
      return ["floating", "consent", "callback", ...Object.keys(TEXTS)];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      this.#styled = adoptStylesheet(root);
      this.#parts = this.#createParts(root);
      this.#listen();
    }

    get state() {
      return this.#state;
    }

    connectedCallback() {
      this.addEventListener("pointerenter", this.#onInterest);
      this.addEventListener("focusin", this.#onInterest);
      this.#blocker = findCallBlocker();
      if (this.#blocker) adviseSiteOwner(this.#blocker);
      if (!this.#styled) this.#placeUnstyled();
      this.setAttribute("state", this.#state);
      this.#statusText = this.#statusText || this.#phrase("text-idle");
      this.#render();
    }

    #onInterest = () => {
      if (!this.#blocker) this.#askForIceServers();
    };

    disconnectedCallback() {
      this.removeEventListener("pointerenter", this.#onInterest);
      this.removeEventListener("focusin", this.#onInterest);
      this.#endCall({ reason: "removed" });
      this.#teardown();
      this.#closeEventStream();
      if (this.#callbackController) this.#callbackController.abort();
    }

    attributeChangedCallback() {
      if (this.isConnected) this.#render();
    }

    // Call from a user gesture (a click), so the browser lets audio play.
    async start() {
      if (isInCall(this.#state)) return;
      const request = { agent: this.getAttribute("agent") || "", variables: this.#visitorVariables() };
      if (!this.#emit("before-start", request, { cancelable: true })) return;
      this.#teardown();
      this.#closeEventStream();
      this.#panelOpen = true;
      this.#formShown = false;
      this.#noteKey = "";
      this.#summary = "";
      this.#networkBlocked = false;
      this.#agentState = "listening";
      this.#session = null;
      this.#transcriptLines = {};
      this.#parts.transcript.replaceChildren();
      this.#blocker = findCallBlocker();
      if (this.#blocker) {
        adviseSiteOwner(this.#blocker);
        this.#fail(new CallError(BLOCKER_ERROR_CODES[this.#blocker] || "unsupported", this.#blocker));
        return;
      }
      this.#startController = new AbortController();
      const signal = this.#startController.signal;
      // The microphone prompt opens at once; the peer connection's offer travels with the start request while the
      // visitor answers it, and the microphone joins the call (replaceTrack) when it is allowed.
      const iceServers = this.#askForIceServers();
      const microphone = (this.#microphone = new Microphone({
        replaceTrack: (track) => this.#connection.replaceMicrophoneTrack(track),
        onSwitched: (track) => this.#emit("microphone", { label: track.label }),
      }));
      const microphoneAllowed = microphone.open().catch((error) => {
        if (!signal.aborted) this.#continueWithoutMicrophone(error);
        return null;
      });
      // Playing inside the click unlocks audio (Safari); the agent's stream replaces this empty one.
      this.#parts.audio.srcObject = new MediaStream();
      this.#parts.audio.play().catch(ignore);
      addEventListener("pagehide", this.#onPageHide);
      this.#setState("microphone");
      try {
        // Asked for when the visitor showed interest, these are usually here already; the offer never waits for
        // TURN allocations: candidates found after it trickle to the call's media resource.
        const connection = (this.#connection = this.#createConnection(await iceServers));
        if (signal.aborted) return;
        const offer = await connection.createOffer();
        if (signal.aborted) return;
        // One request: the plugin starts the call at DialNexa and answers with DialNexa's SDP answer.
        const starting = this.#post("sessions", { ...request, offer, quality_report: true }, signal);
        starting.catch(ignore); // awaited below
        const track = await microphoneAllowed;
        if (signal.aborted) return;
        if (track) {
          await connection.replaceMicrophoneTrack(track);
          microphone.followDefaultDevice();
        }
        this.#setState("connecting");
        const session = (this.#session = await starting);
        if (session.events_url && session.token) this.#openEventStream(session);
        connection.useMediaResource({
          url: session.media_url ? this.#resolve(session.media_url) : "",
          qualityUrl: session.quality_url ? this.#resolve(session.quality_url) : "",
          token: session.token,
          etag: session.media_etag,
          iceServers: session.ice_servers,
        });
        if (typeof session.answer !== "string") throw new CallError("invalid_response", "text-unavailable");
        await connection.applyAnswer(session.answer);
      } catch (error) {
        if (!signal.aborted) this.#fail(error);
      }
    }

    end() {
      this.#endCall({ reason: "hangup" });
    }

    mute(wanted = !this.#muted) {
      const track = this.#microphoneTrack;
      const muted = Boolean(track) && Boolean(wanted);
      if (track) this.#microphone.muted = muted;
      if (muted !== this.#muted) {
        this.#muted = muted;
        this.#render();
        this.#emit("mute", { muted });
      }
      return muted;
    }

    // -- the page: building, rendering, texts -------------------------------------------------------------------

    // The shadow DOM, built once. An element with data-text shows that text of TEXTS; one with data-label is named
    // (aria-label, and title on buttons) by it; #render() fills both in.
    #createParts(root) {
      const launcher = element(
        "button",
        { class: "launcher", part: "launcher", "data-label": "label-open", "aria-controls": "panel" },
        icon(MICROPHONE_ICON)
      );
      const status = element("span", { part: "status", role: "status", "aria-live": "polite" });
      const timer = element("span", { class: "timer", part: "timer" });
      const closeButton = element(
        "button",
        { class: "close-button", part: "close", "data-label": "label-close" },
        icon(CLOSE_ICON)
      );
      const title = element("strong", { class: "title", part: "title", id: "title", "data-text": "text-title" });
      const header = element(
        "div",
        { class: "header", part: "header" },
        element("span", { class: "orb", part: "orb" }, icon(MICROPHONE_ICON)),
        element("div", { class: "heading" }, title, element("p", { class: "status-line" }, status, timer)),
        closeButton
      );
      const intro = element("p", { part: "intro", "data-text": "text-intro" });
      const note = element("p", { class: "note", part: "note" });
      const transcript = element("div", {
        class: "transcript",
        part: "transcript",
        role: "log",
        "aria-live": "polite",
        tabindex: 0,
        "data-label": "label-transcript",
      });
      const summaryText = element("span");
      const summary = element(
        "p",
        { class: "summary", part: "summary" },
        element("strong", { "data-text": "label-summary" }),
        summaryText
      );

      const phoneInput = element("input", {
        id: "phone",
        type: "tel",
        autocomplete: "tel",
        "aria-describedby": "phone-hint form-error",
      });
      const consentCheckbox = element("input", { type: "checkbox" });
      const formError = element("p", { class: "form-error", id: "form-error", role: "alert" });
      const sendButton = element("button", { class: "primary-button", type: "submit", "data-text": "label-send" });
      const backButton = element("button", { class: "link-button", "data-text": "label-back" });
      const callbackForm = element(
        "form",
        { part: "callback", novalidate: "" },
        element("p", { "data-text": "text-callback" }),
        element("div", {}, element("label", { for: "phone", "data-text": "label-phone" }), phoneInput),
        element("p", { class: "fine-print", id: "phone-hint", "data-text": "text-phone-hint" }),
        element(
          "label",
          { class: "checkbox" },
          consentCheckbox,
          element("span", { "data-text": "text-callback-consent" })
        ),
        formError,
        sendButton,
        backButton
      );

      const muteButton = element(
        "button",
        { class: "icon-button", part: "mute", "data-label": "label-mute" },
        icon(MICROPHONE_ICON)
      );
      const meter = element("span", { class: "meter", part: "meter", "aria-hidden": "true" }, element("i"));
      const volumeSlider = element("input", { type: "range", min: 0, max: 1, step: 0.05, value: 1 });
      const hangUpButton = element(
        "button",
        { class: "icon-button hang-up", part: "hangup", "data-label": "label-end" },
        icon(PHONE_ICON, { filled: true, turned: true })
      );
      const controls = element(
        "div",
        { class: "controls", part: "controls" },
        muteButton,
        meter,
        element(
          "label",
          { class: "volume", part: "volume" },
          icon(VOLUME_ICON),
          element("span", { class: "visually-hidden", "data-text": "label-volume" }),
          volumeSlider
        ),
        hangUpButton
      );
      const startButtonText = element("span");
      const startButton = element(
        "button",
        { class: "primary-button", part: "button" },
        icon(PHONE_ICON, { filled: true }),
        startButtonText
      );
      const consentLine = element("p", { class: "fine-print", part: "consent" });
      const callbackLink = element("button", {
        class: "link-button",
        part: "callback-link",
        "data-text": "label-callback",
      });

      const panel = element(
        "section",
        { class: "panel", part: "panel", id: "panel", "aria-labelledby": "title" },
        header,
        intro,
        note,
        transcript,
        summary,
        callbackForm,
        controls,
        startButton,
        consentLine,
        callbackLink
      );
      const audio = element("audio", { autoplay: "" });
      root.append(launcher, panel, audio);
      return {
        launcher, panel, status, timer, closeButton, intro, note, transcript, summary, summaryText,
        callbackForm, phoneInput, consentCheckbox, formError, sendButton, backButton,
        controls, muteButton, meter, volumeSlider, hangUpButton, startButton, startButtonText, consentLine,
        callbackLink, audio,
      };
    }

    #listen() {
      const parts = this.#parts;
      parts.launcher.addEventListener("click", () => {
        if (this.#panelOpen) this.#closePanel();
        else this.#openPanel();
      });
      parts.closeButton.addEventListener("click", () => this.#closePanel());
      parts.startButton.addEventListener("click", () => this.start());
      parts.hangUpButton.addEventListener("click", () => this.end());
      parts.muteButton.addEventListener("click", () => this.mute());
      parts.volumeSlider.addEventListener("input", () => {
        parts.audio.volume = Number(parts.volumeSlider.value);
      });
      parts.callbackLink.addEventListener("click", () => this.#showCallbackForm());
      parts.backButton.addEventListener("click", () => this.#hideCallbackForm());
      parts.callbackForm.addEventListener("submit", (event) => this.#requestCallback(event));
      parts.panel.addEventListener("keydown", (event) => {
        if (event.key !== "Escape") return;
        if (isInCall(this.#state)) this.end();
        else if (this.#formShown) this.#hideCallbackForm();
        else if (this.#floating) this.#closePanel();
      });
    }

    get #microphoneTrack() {
      return this.#microphone ? this.#microphone.track : null;
    }

    get #floating() {
      return this.getAttribute("floating") === "true";
    }

    #phrase(key) {
      const value = this.getAttribute(key);
      return value === null ? TEXTS[key] : value;
    }

    #render() {
      const parts = this.#parts;
      const state = this.#state;
      const formShown = this.#formShown;
      const blocker = this.#blocker;
      const inCall = isInCall(state);
      const live = isLive(state);
      const track = this.#microphoneTrack;
      const consent = this.getAttribute("consent") || "";
      const withoutMicrophone = this.#noteKey === "text-no-mic";
      parts.launcher.dataset.label = this.#panelOpen ? "label-close" : "label-open";
      setIcon(parts.launcher, this.#panelOpen ? CLOSE_ICON : MICROPHONE_ICON);
      parts.launcher.setAttribute("aria-expanded", this.#panelOpen);
      parts.startButtonText.dataset.text = START_LABEL_KEYS[state] || "label-start";
      parts.muteButton.title = this.#phrase(this.#muted ? "label-unmute" : "label-mute");
      setIcon(parts.muteButton, this.#muted || !track ? MICROPHONE_OFF_ICON : MICROPHONE_ICON);
      parts.muteButton.setAttribute("aria-pressed", this.#muted);
      parts.muteButton.disabled = !track;
      for (const node of this.shadowRoot.querySelectorAll("[data-text]")) {
        setText(node, this.#phrase(node.dataset.text));
      }
      for (const node of this.shadowRoot.querySelectorAll("[data-label]")) {
        const label = this.#phrase(node.dataset.label);
        node.setAttribute("aria-label", label);
        if (node.localName === "button" && node !== parts.muteButton) node.title = label;
      }
      setText(parts.status, state === "idle" && blocker ? this.#phrase(blocker) : this.#statusText);
      const noteKey = this.#weakConnection && live ? "text-weak" : this.#noteKey;
      setText(parts.note, noteKey && this.#phrase(noteKey));
      setText(parts.summaryText, this.#summary);
      setText(parts.consentLine, consent);
      const callbackWanted = inCall
        ? live && withoutMicrophone
        : this.getAttribute("callback") === "true" || withoutMicrophone || this.#networkBlocked || Boolean(blocker);
      const panelShown = !this.#floating || this.#panelOpen;
      if (callbackWanted && panelShown && !this.#callbacksAsked) this.#askAboutCallbacks();
      const offerCallback = callbackWanted && this.#callbacksOn;
      // Which parts show now.
      const visible = {
        launcher: this.#floating,
        // Unstyled, the launcher stays in view under the panel and is its close button.
        closeButton: this.#floating && this.#styled,
        panel: panelShown,
        timer: live,
        // The intro invites a call in the browser: not where the browser can't make one.
        intro: state === "idle" && !formShown && !blocker && parts.intro.textContent,
        note: noteKey && !formShown && state !== "error",
        transcript: !formShown,
        summary: state === "ended" && this.#summary && !formShown,
        callbackForm: formShown,
        controls: inCall && !formShown,
        startButton: !inCall && !formShown && !blocker,
        consentLine: consent && !inCall && !formShown,
        callbackLink: !formShown && offerCallback,
      };
      for (const name in visible) parts[name].hidden = !visible[name];
      // Without a way to call here, "call me back" is the main action.
      parts.callbackLink.className = blocker ? "primary-button" : "link-button";
    }

    // Without the stylesheet, a few declarations set through the CSSOM (which a strict CSP allows, unlike style
    // attributes and elements) keep a floating widget in the corner of the window, and its panel readable over the
    // page, instead of in the page's flow below its footer.
    #placeUnstyled() {
      if (!this.#floating) return;
      setStyles(this, UNSTYLED_FLOATING);
      setStyles(this.#parts.panel, UNSTYLED_PANEL);
    }

    #setState(state, { statusText = "" } = {}) {
      const previous = this.#state;
      const focused = document.activeElement;
      const focusIsOurs = focused === this || !focused || focused === document.body;
      this.#state = state;
      this.#statusText = statusText || this.#phrase("text-" + state);
      this.setAttribute("state", state);
      this.#render();
      if (state === previous) return;
      this.#emit("state", { state });
      // Focus hang-up during a call, start after it.
      if (focusIsOurs && isInCall(state) !== isInCall(previous)) {
        (isInCall(state) ? this.#parts.hangUpButton : this.#parts.startButton).focus();
      }
    }

    #emit(type, detail, { cancelable = false } = {}) {
      const event = new CustomEvent("webcall:" + type, { detail, bubbles: true, composed: true, cancelable });
      return this.dispatchEvent(event);
    }

    // The main action: start a call, or, where this page can't place one, ask for a call back.
    #mainAction() {
      return this.#blocker ? this.#parts.callbackLink : this.#parts.startButton;
    }

    #openPanel() {
      this.#panelOpen = true;
      this.#render();
      if (isInCall(this.#state)) this.#parts.hangUpButton.focus();
      else if (this.#formShown) this.#parts.phoneInput.focus();
      else this.#mainAction().focus();
    }

    #closePanel() {
      this.#panelOpen = false;
      this.#render();
      this.#parts.launcher.focus();
    }

    #showLevel(level) {
      this.#parts.meter.style.setProperty("--level", level.toFixed(2));
    }

    #showTranscript({ role, text, final }) {
      const transcript = this.#parts.transcript;
      const followingTheEnd = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 40;
      let line = this.#transcriptLines[role];
      if (!line) {
        const speaker = this.#phrase(role === "user" ? "label-you" : "label-agent") + ": ";
        line = element(
          "p",
          { class: role === "user" ? "user-turn" : "agent-turn", dir: "auto" },
          element("span", { class: "visually-hidden" }, speaker),
          ""
        );
        this.#transcriptLines[role] = line;
        transcript.append(line);
        if (transcript.childElementCount > WebCall.MAX_TRANSCRIPT_LINES) transcript.firstChild.remove();
      }
      line.lastChild.data = text;
      line.classList.toggle("partial", !final);
      if (final) this.#transcriptLines[role] = null;
      if (followingTheEnd) transcript.scrollTop = transcript.scrollHeight;
      this.#emit("transcript", { role, text, final });
    }

    // -- the call -------------------------------------------------------------------------------------------------

    #createConnection(iceServers) {
      const audio = this.#parts.audio;
      return new MediaConnection(iceServers, {
        // The agent's audio plays in an <audio> element, not through WebAudio, so echo cancellation hears it.
        onAudio: (stream) => {
          audio.srcObject = stream;
          audio.play().catch(ignore);
        },
        onMessage: (message) => this.#onAgentMessage(message),
        onChannelClosed: () => {
          if (isLive(this.#state)) this.#finish({ reason: "remote_hangup" });
        },
        onConnected: () => {
          if (this.#state === "connecting") this.#goLive();
        },
        onReconnecting: () => {
          this.#reconnecting = true;
          this.#setState(this.#state, { statusText: this.#phrase("text-reconnecting") });
        },
        onReconnected: () => {
          this.#reconnecting = false;
          this.#setState(this.#state);
        },
        onLost: () => this.#finish({ reason: "connection_lost", textKey: "text-lost" }),
        onFailed: (code) => {
          this.#networkBlocked = code === "network_blocked";
          this.#fail(new CallError(code, this.#networkBlocked ? "text-blocked" : "text-failed"));
        },
        onWeak: (weak) => {
          this.#weakConnection = weak;
          this.#render();
        },
      });
    }

    // The ICE servers for the next call, asked for once and again when their TURN credentials near their end; a
    // plugin that cannot be asked means no ICE servers (the call still connects wherever UDP flows).
    #askForIceServers() {
      const cache = this.#iceServers;
      if (cache.promise && Date.now() < cache.expiresAt) return cache.promise;
      cache.expiresAt = Date.now() + WebCall.ICE_SERVERS_KEPT_MS;
      cache.promise = this.#post("ice-servers", {}, new AbortController().signal).then(
        (answer) => {
          if (answer.ttl > 0) cache.expiresAt = Math.min(cache.expiresAt, Date.now() + answer.ttl * 500);
          return Array.isArray(answer.ice_servers) ? answer.ice_servers : [];
        },
        () => {
          cache.expiresAt = 0;
          return [];
        }
      );
      return cache.promise;
    }

    // Go on receive-only, and offer a call back.
    #continueWithoutMicrophone(error) {
      this.#noteKey = "text-no-mic";
      warn(`no microphone (${error.name}), so the call is receive-only; allow it to talk.`);
      // Firefox has no permissions-policy API to ask up front: a frame's refusal only shows here, and looks like a
      // visitor's own; the advice is for the site owner trying the page.
      if (error.name === "NotAllowedError" && window.top !== window) adviseSiteOwner("text-frame-blocked");
      this.#emit("error", { code: "microphone_unavailable", message: this.#phrase(this.#noteKey), fatal: false });
    }

    #goLive() {
      const startedAt = Date.now();
      const showDuration = () => {
        const seconds = Math.floor((Date.now() - startedAt) / 1000);
        setText(this.#parts.timer, `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
      };
      showDuration();
      this.#clockTimer = setInterval(showDuration, 1000);
      const maxSeconds = this.#session.max_call_seconds;
      if (maxSeconds > 0) {
        const timeUp = () => this.#endCall({ reason: "max_duration", textKey: "text-max" });
        this.#maxDurationTimer = setTimeout(timeUp, maxSeconds * 1000);
      }
      this.#setState(this.#agentState);
      this.#screenWakeLock.acquire();
      // The level meter shows the visitor's own microphone.
      this.#microphone.measureLevel((level) => this.#showLevel(level));
    }

    #onAgentMessage(message) {
      if (message.type === "agent_state") {
        if (!isLive(message.state)) return;
        this.#agentState = message.state;
        if (isLive(this.#state) && !this.#reconnecting) this.#setState(message.state);
      } else if (message.type === "transcript" && typeof message.text === "string") {
        const role = message.role === "user" ? "user" : "agent";
        this.#showTranscript({ role, text: message.text, final: message.final !== false });
      } else if (message.type === "call_ended") {
        this.#finish({ reason: message.reason || "agent_hangup", textKey: END_REASON_TEXT_KEYS[message.reason] });
      }
    }

    #openEventStream(session) {
      this.#eventStream = new CallEventStream({
        url: this.#resolve(session.events_url),
        token: session.token,
        onEvent: (event) => this.#onLifecycleEvent(event),
      });
    }

    // A lifecycle event is re-emitted as webcall:<type>; call.ended brings the summary and ends what is left.
    #onLifecycleEvent(event) {
      this.#emit(event.type, event);
      if (event.type !== "call.ended") return;
      const call = event.call || {};
      if (typeof call.summary === "string") this.#summary = call.summary;
      this.#closeEventStream();
      if (isLive(this.#state)) {
        this.#finish({ reason: call.end_reason || "ended", textKey: END_REASON_TEXT_KEYS[call.end_reason] });
      } else if (isInCall(this.#state)) {
        // Ended before it connected (e.g. the media token expired).
        const textKey = call.end_reason === "token_expired" ? "text-expired" : "text-failed";
        this.#fail(new CallError(call.end_reason || "ended", textKey));
      } else {
        this.#render();
      }
    }

    #closeEventStream() {
      if (this.#eventStream) this.#eventStream.close();
      this.#eventStream = null;
    }

    // The visitor (or the page going away) ends the call: hang up, then show it ended.
    #endCall({ reason, textKey, unloading = false }) {
      if (!isInCall(this.#state)) return;
      this.#hangUp({ keepalive: unloading });
      this.#finish({ reason, textKey });
    }

    // Two hang-ups, whichever reaches DialNexa first: at the media resource and at the plugin's end route.
    #hangUp({ keepalive = false } = {}) {
      if (this.#connection) this.#connection.hangUp({ keepalive });
      const session = this.#session;
      if (session && session.end_url) {
        const headers = { Authorization: "Bearer " + session.token };
        fetch(this.#resolve(session.end_url), { method: "POST", headers, keepalive }).catch(ignore);
      }
    }

    // The call is over (no hang-up is sent from here).
    #finish({ reason, textKey = "text-ended" }) {
      if (!isInCall(this.#state)) return;
      this.#teardown();
      this.#setState("ended", { statusText: this.#phrase(textKey) });
      this.#emit("ended", this.#summary ? { reason, summary: this.#summary } : { reason });
      if (this.#eventStream) this.#eventStream.closeAfter(WebCall.SUMMARY_WAIT_MS);
    }

    #fail(error) {
      let failure = error;
      if (!(error instanceof CallError)) {
        warn("the call failed:", error);
        failure = new CallError("connect_failed", "text-failed");
      }
      if (this.#session) this.#hangUp(); // free the call on the server
      this.#teardown();
      this.#closeEventStream();
      const message = this.#phrase(failure.textKey).replace("{s}", failure.retryAfterSeconds || 60);
      this.#setState("error", { statusText: message });
      this.#emit("error", { code: failure.code, message, fatal: true });
    }

    // Closes everything a call opened but the event stream (see #finish).
    #teardown() {
      if (this.#startController) this.#startController.abort();
      this.#startController = null;
      clearInterval(this.#clockTimer);
      clearTimeout(this.#maxDurationTimer);
      if (this.#connection) this.#connection.close();
      this.#connection = null;
      if (this.#microphone) this.#microphone.close();
      this.#microphone = null;
      this.#reconnecting = false;
      this.#weakConnection = false;
      this.#muted = false;
      this.#parts.audio.pause();
      this.#parts.audio.srcObject = null;
      removeEventListener("pagehide", this.#onPageHide);
      this.#screenWakeLock.release();
      this.#showLevel(0);
    }

    // -- requests and the call-back form ------------------------------------------------------------------------

    // A route name or a URL from the plugin, resolved against the endpoint (the plugin's prefix).
    #resolve(url) {
      const endpoint = new URL(this.getAttribute("endpoint") || DEFAULT_ENDPOINT, location.href).href;
      return new URL(url, endpoint.replace(/\/*$/, "/")).href;
    }

    #visitorVariables() {
      const variables = parseObject(this.getAttribute("variables") || "{}");
      if (variables) return variables;
      warn('the "variables" attribute must be a JSON object like {"name":"Ada"}; sending none.');
      return {};
    }

    // POSTs JSON to the plugin with the page's call ticket, if it set one: the ticket attribute is read now, so the
    // page may replace it at any time. Resolves to the answer; rejects with a CallError.
    async #post(route, body, signal) {
      const url = this.#resolve(route);
      const ticket = this.getAttribute("ticket");
      const payload = ticket ? { ...body, ticket } : body;
      let response;
      try {
        response = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          credentials: "same-origin",
          body: JSON.stringify(payload),
          signal,
        });
      } catch (error) {
        if (signal.aborted) throw error;
        const advice = "check the endpoint attribute and the network";
        warn(`could not reach ${url} (${error.message}): ${advice}.`);
        throw new CallError("network_error", "text-unavailable");
      }
      const answer = await response.json().catch(() => ({}));
      if (response.ok) return answer;
      const code = answer.code || "http_" + response.status;
      const advice = ERROR_ADVICE[code] ? `; ${ERROR_ADVICE[code]}.` : "";
      const explanation = answer.message || response.statusText;
      warn(`POST ${url} → ${response.status} ${code}: ${explanation}${advice}`);
      const retryAfterSeconds = Number(response.headers.get("Retry-After"));
      throw new CallError(code, errorTextKey(code, response.status), { retryAfterSeconds });
    }

    // Asks the plugin once whether it rings phones back (GET callbacks: the countries it may ring; none while
    // call-backs are off), so that no visitor is offered a form that can only fail. Unreachable: asked again later.
    async #askAboutCallbacks() {
      this.#callbacksAsked = true;
      let countries;
      try {
        const response = await fetch(this.#resolve("callbacks"), { credentials: "same-origin" });
        countries = (await response.json()).countries;
      } catch {
        this.#callbacksAsked = false;
        return;
      }
      this.#callbacksOn = Array.isArray(countries) && countries.length > 0;
      if (!this.#callbacksOn && this.getAttribute("callback") === "true") {
        warn("call-backs are off: set WEBCALL_CALLBACK_COUNTRIES to the countries they may ring.");
      }
      this.#render();
    }

    #showCallbackForm() {
      this.#endCall({ reason: "callback" });
      this.#formShown = true;
      setText(this.#parts.formError, "");
      this.#render();
      this.#parts.phoneInput.focus();
    }

    #hideCallbackForm() {
      this.#formShown = false;
      setText(this.#parts.formError, "");
      this.#render();
      this.#mainAction().focus();
    }

    async #requestCallback(event) {
      event.preventDefault();
      const parts = this.#parts;
      const phoneNumber = parts.phoneInput.value.replace(/[\s().-]/g, "");
      const phoneNumberInvalid = !/^\+[1-9]\d{6,14}$/.test(phoneNumber);
      let problem = "";
      if (phoneNumberInvalid) problem = "text-invalid-phone";
      else if (!parts.consentCheckbox.checked) problem = "text-consent-required";
      parts.phoneInput.setAttribute("aria-invalid", phoneNumberInvalid);
      setText(parts.formError, problem && this.#phrase(problem));
      if (problem) {
        (phoneNumberInvalid ? parts.phoneInput : parts.consentCheckbox).focus();
        return;
      }
      const agent = this.getAttribute("agent") || "";
      const request = { agent, phone_number: phoneNumber, consent: true, variables: this.#visitorVariables() };
      if (!this.#emit("before-callback", request, { cancelable: true })) return;
      const controller = (this.#callbackController = new AbortController());
      parts.sendButton.disabled = true;
      try {
        const route = (this.#session && this.#session.callbacks_url) || "callbacks";
        const answer = await this.#post(route, request, controller.signal);
        parts.callbackForm.reset();
        this.#formShown = false;
        this.#noteKey = "text-callback-sent";
        this.#setState("idle");
        this.#emit("callback", answer);
        parts.startButton.focus();
      } catch (error) {
        if (controller.signal.aborted) return;
        const message = this.#phrase(error.textKey || "text-unavailable");
        setText(parts.formError, message.replace("{s}", error.retryAfterSeconds || 60));
        if (["invalid_phone_number", "callback_not_allowed"].includes(error.code)) parts.phoneInput.focus();
      }
      parts.sendButton.disabled = false;
    }
  }

  // The WebRTC side of one call: an RTCPeerConnection with one send-and-receive audio transceiver (the microphone
  // joins later with replaceTrack, so the offer need not wait for the permission prompt) and the "events" data
  // channel; and the call's media resource on the plugin, which relays to DialNexa with WHIP semantics (RFC 9725):
  // PATCH for trickled candidates and ICE restarts, DELETE to hang up. The offer goes as soon as the host candidates
  // are known; candidates found later (TURN relays take a few round trips) trickle after it. When the network drops,
  // it tries an ICE restart and gives the call a few seconds to recover. It reports to its owner through the
  // handlers it is given and never touches the page:
  //   onAudio(stream)     the agent's audio arrived
  //   onMessage(message)  a message on the data channel (agent_state, transcript, call_ended), parsed
  //   onChannelClosed()   the data channel closed (the other side hung up)
  //   onConnected()       connected for the first time
  //   onReconnecting()    the connection dropped; recovering
  //   onReconnected()     recovered
  //   onLost()            not recovered within the grace period
  //   onFailed(code)      could not connect: "network_blocked" (no candidate pair ever worked), "connect_failed"
  //   onWeak(weak)        the connection became too weak for speech to be followed, or recovered
  class MediaConnection {
    static CONNECT_TIMEOUT_MS = 8000;
    static GRACE_PERIOD_MS = 5000;
    static RESTART_AFTER_MS = 2000;
    static TRICKLE_BATCH_MS = 30;

    #peer;
    #channel;
    #microphoneSender;
    #handlers;
    #quality;
    #mediaUrl = "";
    #qualityUrl = "";
    #authorization = {};
    #etag = "";
    #iceRestartUnsupported = false;
    #everConnected = false;
    #closed = false;
    #connectTimer = 0;
    #graceTimer = 0; // set while the connection recovers
    #restartTimer = 0;
    // Candidate lines found after the offer left, waiting for the media resource (or the next batch).
    #offerSent = false;
    #trickleLines = [];
    #trickleTimer = 0;
    #trickleStopped = false;

    constructor(iceServers, handlers) {
      this.#handlers = handlers;
      const peer = (this.#peer = new RTCPeerConnection({ iceServers }));
      this.#quality = new CallQuality(peer, (weak) => handlers.onWeak(weak));
      // Without a microphone this transceiver has no track: the call is receive-only and sends no RTP at all,
      // which a media server accepts (a silent track would cost upload for nothing). Liveness is the connection's:
      // the browser keeps answering and sending ICE consent checks and RTCP reports on the agent's audio. Staying
      // "sendrecv" lets a microphone plugged in later be attached with replaceTrack, without renegotiating.
      this.#microphoneSender = peer.addTransceiver("audio", { direction: "sendrecv" }).sender;
      const channel = (this.#channel = peer.createDataChannel("events"));
      channel.onmessage = (event) => {
        const message = parseObject(event.data);
        if (message) handlers.onMessage(message);
      };
      channel.onclose = () => handlers.onChannelClosed();
      peer.ontrack = (event) => handlers.onAudio(event.streams[0] || new MediaStream([event.track]));
      peer.onconnectionstatechange = () => this.#onConnectionStateChange();
      peer.addEventListener("icecandidate", (event) => this.#onCandidate(event.candidate));
    }

    // The SDP offer with the candidates found at once (the host ones); the others trickle after it.
    async createOffer() {
      await this.#peer.setLocalDescription(await this.#peer.createOffer());
      await this.#gatherCandidates({ withinMs: 1500, quietMs: 25 });
      this.#offerSent = true;
      return this.#peer.localDescription.sdp;
    }

    // Sends this microphone track (or another, when a headset is plugged in) without renegotiating.
    replaceMicrophoneTrack(track) {
      return this.#microphoneSender.replaceTrack(track);
    }

    // Where the call's media resource is (its URL, ETag and the call's token), for trickled candidates, ICE
    // restarts and the hang-up; where its quality summary goes; and DialNexa's own ICE servers for the call, which
    // an ICE restart gathers with.
    useMediaResource({ url, qualityUrl, token, etag, iceServers }) {
      this.#mediaUrl = url;
      this.#qualityUrl = qualityUrl;
      this.#etag = etag || "";
      this.#authorization = { Authorization: "Bearer " + token };
      if (Array.isArray(iceServers) && iceServers.length) {
        const configuration = this.#peer.getConfiguration();
        try {
          this.#peer.setConfiguration({ ...configuration, iceServers: [...configuration.iceServers, ...iceServers] });
        } catch (error) {
          // Not servers this browser can use: a restart gathers with the site's own, as the call started.
        }
      }
      this.#sendTrickledCandidates();
    }

    // Applies the SDP answer; the call must then connect within CONNECT_TIMEOUT_MS.
    async applyAnswer(answer) {
      await this.#peer.setRemoteDescription({ type: "answer", sdp: answer });
      this.#connectTimer = setTimeout(() => this.#failToConnect(), MediaConnection.CONNECT_TIMEOUT_MS);
    }

    // Hangs up at the media resource; with `keepalive` the request outlives a page that is closing.
    hangUp({ keepalive = false } = {}) {
      if (!this.#mediaUrl) return;
      fetch(this.#mediaUrl, { method: "DELETE", headers: this.#authorization, keepalive }).catch(ignore);
    }

    // Closes the connection without a word to the handlers, and sends how the call sounded (once, outliving the
    // page if it is closing).
    close() {
      if (this.#closed) return;
      this.#closed = true;
      clearTimeout(this.#connectTimer);
      clearTimeout(this.#graceTimer);
      clearTimeout(this.#restartTimer);
      clearTimeout(this.#trickleTimer);
      const summary = this.#quality.stop();
      if (summary && this.#qualityUrl) {
        fetch(this.#qualityUrl, {
          method: "POST",
          headers: { ...this.#authorization, "Content-Type": "application/json" },
          body: JSON.stringify(summary),
          keepalive: true,
        }).catch(ignore);
      }
      this.#channel.onclose = null;
      this.#channel.onmessage = null;
      this.#peer.close();
    }

    #onConnectionStateChange() {
      const state = this.#peer.connectionState;
      if (state === "connected") {
        clearTimeout(this.#connectTimer);
        if (!this.#everConnected) {
          this.#everConnected = true;
          this.#quality.begin();
          this.#handlers.onConnected();
        } else if (this.#graceTimer) {
          clearTimeout(this.#graceTimer);
          clearTimeout(this.#restartTimer);
          this.#graceTimer = 0;
          this.#handlers.onReconnected();
        }
      } else if (state === "failed" && !this.#everConnected) {
        this.#failToConnect();
      } else if ((state === "failed" || state === "disconnected") && this.#everConnected && !this.#graceTimer) {
        // A grace period for the network, and an ICE restart, said to the visitor: at once when ICE failed; when
        // it is only disconnected (lost checks on a lossy network; the path usually comes back by itself), once the
        // agent's audio has stopped arriving. When the grace period passes, no hang-up is sent: the network is gone,
        // and DialNexa records a network failure.
        this.#graceTimer = setTimeout(() => this.#onGracePeriodOver(), MediaConnection.GRACE_PERIOD_MS);
        if (state === "failed") this.#reconnect();
        else this.#restartTimer = setTimeout(() => this.#reconnectOnceUnheard(), MediaConnection.RESTART_AFTER_MS);
      } else if (state === "failed" && this.#graceTimer) {
        clearTimeout(this.#restartTimer);
        this.#reconnect();
      }
    }

    // Firefox calls a lossy connection "disconnected" while the agent's audio still flows: the visitor still hears
    // the agent, and restarting ICE then gains nothing and risks the call (a media server that refuses the restart
    // leaves an offer to roll back).
    async #reconnectOnceUnheard() {
      const stillHeard = await this.#quality.audioArrivedWithin(MediaConnection.RESTART_AFTER_MS / 2);
      if (this.#closed || !this.#graceTimer) return;
      if (stillHeard) {
        this.#restartTimer = setTimeout(() => this.#reconnectOnceUnheard(), MediaConnection.RESTART_AFTER_MS);
      } else {
        this.#reconnect();
      }
    }

    #reconnect() {
      this.#handlers.onReconnecting();
      this.#restartIce();
    }

    // The browser says the connection is down, but the agent's audio may still be arriving: some browsers (Firefox)
    // report "disconnected" for a few lost consent checks on a lossy network and "connected" only at the next
    // check, seconds later. A call whose audio still arrives is not lost; it gets another grace period.
    async #onGracePeriodOver() {
      const stillHeard = await this.#quality.audioArrivedWithin(MediaConnection.GRACE_PERIOD_MS / 2);
      if (this.#closed || !this.#graceTimer) return;
      if (stillHeard) {
        this.#graceTimer = setTimeout(() => this.#onGracePeriodOver(), MediaConnection.GRACE_PERIOD_MS);
      } else {
        this.#handlers.onLost();
      }
    }

    // No candidate pair ever answered: the network lets no call audio through (UDP dropped and no TURN relay that
    // works), which the visitor can only fix elsewhere; anything else is an ordinary failure to connect.
    async #failToConnect() {
      clearTimeout(this.#connectTimer);
      if (this.#closed || this.#everConnected) return;
      const anyPairWorked = await this.#quality.anyCandidatePairSucceeded();
      if (!this.#closed) this.#handlers.onFailed(anyPairWorked ? "connect_failed" : "network_blocked");
    }

    // A candidate found after the offer left joins the next batch; the end of gathering is said once.
    #onCandidate(candidate) {
      if (!this.#offerSent || this.#trickleStopped) return;
      const line = candidate && candidate.candidate ? `a=${candidate.candidate}\r\n` : "a=end-of-candidates\r\n";
      if (!this.#trickleLines.includes(line)) this.#trickleLines.push(line);
      clearTimeout(this.#trickleTimer);
      this.#trickleTimer = setTimeout(() => this.#sendTrickledCandidates(), MediaConnection.TRICKLE_BATCH_MS);
    }

    // Trickle ICE (RFC 8840) through the media resource: one PATCH per batch, with If-Match naming the session.
    // A resource that cannot take them (405, 501) is not asked again.
    async #sendTrickledCandidates() {
      if (!this.#mediaUrl || !this.#etag || !this.#trickleLines.length || this.#closed) return;
      const body = this.#sdpFragment(this.#trickleLines.splice(0));
      try {
        const response = await fetch(this.#mediaUrl, {
          method: "PATCH",
          headers: {
            ...this.#authorization,
            "Content-Type": "application/trickle-ice-sdpfrag",
            "If-Match": this.#etag,
          },
          body,
        });
        if (response.status === 405 || response.status === 501) this.#trickleStopped = true;
      } catch (error) {
        // The network is failing; the checks on the candidates already sent decide.
      }
    }

    // An RFC 8840 fragment: this side's ICE credentials and first media section, then the candidate `lines`.
    #sdpFragment(lines) {
      const sdp = this.#peer.localDescription.sdp;
      const firstLine = (start) => sdp.match(new RegExp(`^${start}.*\r\n`, "m"))[0];
      return ["a=ice-ufrag:", "a=ice-pwd:", "m=", "a=mid:"].map(firstLine).join("") + lines.join("");
    }

    // Waits until ICE gathering completes, at most `withinMs`; with `quietMs`, only until that long has passed
    // without a new host candidate (they come at once; STUN and TURN answers take round trips, and trickle).
    #gatherCandidates({ withinMs, quietMs = 0 }) {
      const peer = this.#peer;
      return new Promise((resolve) => {
        let timer = 0;
        const done = () => {
          clearTimeout(timer);
          peer.removeEventListener("icecandidate", onCandidate);
          resolve();
        };
        const onCandidate = (event) => {
          if (!event.candidate) {
            done();
          } else if (quietMs && event.candidate.type === "host") {
            clearTimeout(timer);
            timer = setTimeout(done, quietMs);
          }
        };
        timer = setTimeout(done, withinMs);
        peer.addEventListener("icecandidate", onCandidate);
        if (peer.iceGatheringState === "complete") done();
      });
    }

    // An ICE restart through the media resource (RFC 9725 §4.3): PATCH with If-Match: * (an ICE restart applies to
    // whatever version of the session the resource holds) and the new offer's ICE credentials and candidates as a
    // trickle-ICE fragment; the answer fragment carries the other side's. A resource that answers 405 or 501 cannot
    // restart and is not asked again; on any other failure the offer is rolled back and the grace period decides.
    async #restartIce() {
      const peer = this.#peer;
      if (!this.#mediaUrl || this.#iceRestartUnsupported) return;
      try {
        this.#offerSent = false; // the restart's candidates travel in its own fragment
        await peer.setLocalDescription(await peer.createOffer({ iceRestart: true }));
        await this.#gatherCandidates({ withinMs: 1000 });
        const candidates = peer.localDescription.sdp.match(/^a=candidate.*\r\n/gm) || [];
        const response = await fetch(this.#mediaUrl, {
          method: "PATCH",
          headers: { ...this.#authorization, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" },
          body: this.#sdpFragment(candidates),
        });
        this.#iceRestartUnsupported = response.status === 405 || response.status === 501;
        const answerFragment = response.status === 200 ? await response.text() : "";
        const iceAttribute = (name) => (answerFragment.match(new RegExp(`a=ice-${name}:\\S+`)) || [])[0];
        const usernameFragment = iceAttribute("ufrag");
        const password = iceAttribute("pwd");
        if (!usernameFragment || !password || this.#closed) {
          this.#rollBackOffer();
          return;
        }
        this.#etag = response.headers.get("ETag") || this.#etag;
        const remoteSdp = peer.remoteDescription.sdp
          .replace(/a=ice-ufrag:\S+/g, usernameFragment)
          .replace(/a=ice-pwd:\S+/g, password);
        await peer.setRemoteDescription({ type: "answer", sdp: remoteSdp });
        for (const candidate of answerFragment.match(/^a=candidate:.*/gm) || []) {
          peer.addIceCandidate({ candidate: candidate.slice(2), sdpMLineIndex: 0 }).catch(ignore);
        }
      } catch (error) {
        this.#rollBackOffer();
      } finally {
        this.#offerSent = true;
      }
    }

    #rollBackOffer() {
      if (this.#peer.signalingState === "have-local-offer") {
        this.#peer.setLocalDescription({ type: "rollback" }).catch(ignore);
      }
    }
  }

  // How the call sounds, from the peer connection's statistics (getStats) every QUALITY_SAMPLE_MS: the round-trip
  // time, the jitter of the agent's audio, packets lost each way, and the candidate pair in use (host, srflx, prflx or
  // relay; over udp, tcp or tls). It calls onWeak(true) when loss or delay would break speech up and onWeak(false)
  // once two samples in a row are fine again; stop() returns the call's summary for the plugin (checked by
  // webcall/quality.py).
  const QUALITY_SAMPLE_MS = 2000;
  // Above any of these, speech breaks up: the share of packets lost since the last sample (either way), the round
  // trip, the jitter.
  const WEAK_LOSS = 0.08;
  const WEAK_ROUND_TRIP_MS = 500;
  const WEAK_JITTER_MS = 60;

  class CallQuality {
    #peer;
    #onWeak;
    #timer = 0;
    #createdAt = performance.now();
    #connectedAt = 0;
    #connectMs = 0;
    #samples = 0;
    #candidateType = "";
    #protocol = "";
    #roundTrips = [];
    #jitters = [];
    #outboundLosses = [];
    #inbound = { lost: 0, received: 0 };
    #weak = false;
    #goodSamplesInARow = 0;
    #packetsArrived = 0;
    #lastArrivalAt = 0;
    #weakSamples = 0;

    constructor(peer, onWeak) {
      this.#peer = peer;
      this.#onWeak = onWeak;
    }

    // The call connected: time to connect is from the peer connection's creation (the click) to now.
    begin() {
      this.#connectedAt = performance.now();
      this.#connectMs = Math.round(this.#connectedAt - this.#createdAt);
      this.#sample().catch(ignore);
      this.#timer = setInterval(() => this.#sample().catch(ignore), QUALITY_SAMPLE_MS);
    }

    // Whether any ICE candidate pair ever got an answer (none: nothing on this network reaches the media server).
    async anyCandidatePairSucceeded() {
      let succeeded = false;
      const report = await this.#peer.getStats().catch(() => new Map());
      report.forEach((stat) => {
        if (stat.type === "candidate-pair" && stat.state === "succeeded") succeeded = true;
      });
      return succeeded;
    }

    // Whether the agent's audio packets arrived in the last `withinMs` (asked now).
    async audioArrivedWithin(withinMs) {
      const report = await this.#peer.getStats().catch(() => new Map());
      report.forEach((stat) => {
        if (stat.kind === "audio" && stat.type === "inbound-rtp") this.#countArrivals(stat.packetsReceived || 0);
      });
      return performance.now() - this.#lastArrivalAt < withinMs;
    }

    #countArrivals(packetsReceived) {
      if (packetsReceived > this.#packetsArrived) {
        this.#packetsArrived = packetsReceived;
        this.#lastArrivalAt = performance.now();
      }
    }

    // Stops sampling; the summary of a call that connected, or null.
    stop() {
      clearInterval(this.#timer);
      if (!this.#connectedAt) return null;
      const mean = (values) => values.reduce((sum, value) => sum + value, 0) / values.length;
      const { lost, received } = this.#inbound;
      const summary = {
        connect_ms: this.#connectMs,
        duration_s: Math.round((performance.now() - this.#connectedAt) / 1000),
        samples: this.#samples,
        loss_in: lost + received > 0 ? Number((lost / (lost + received)).toFixed(4)) : 0,
        weak_s: (this.#weakSamples * QUALITY_SAMPLE_MS) / 1000,
      };
      if (this.#candidateType) summary.candidate = this.#candidateType;
      if (this.#protocol) summary.protocol = this.#protocol;
      if (this.#roundTrips.length) {
        summary.rtt_ms = Math.round(mean(this.#roundTrips));
        summary.rtt_max_ms = Math.round(Math.max(...this.#roundTrips));
      }
      if (this.#jitters.length) summary.jitter_ms = Math.round(mean(this.#jitters));
      if (this.#outboundLosses.length) summary.loss_out = Number(mean(this.#outboundLosses).toFixed(4));
      return summary;
    }

    async #sample() {
      const report = await this.#peer.getStats();
      const pair = CallQuality.#selectedPair(report);
      const local = pair && report.get(pair.localCandidateId);
      if (local && CANDIDATE_TYPES.includes(local.candidateType)) {
        this.#candidateType = local.candidateType;
        const protocol = local.candidateType === "relay" ? local.relayProtocol || "udp" : local.protocol;
        this.#protocol = PROTOCOLS.includes(protocol) ? protocol : "";
      }
      let inbound = null;
      let remoteInbound = null;
      report.forEach((stat) => {
        if (stat.kind === "audio" && stat.type === "inbound-rtp") inbound = stat;
        if (stat.kind === "audio" && stat.type === "remote-inbound-rtp") remoteInbound = stat;
      });
      let roundTrip = pair && pair.currentRoundTripTime;
      if (roundTrip === undefined && remoteInbound) roundTrip = remoteInbound.roundTripTime;
      const roundTripMs = roundTrip >= 0 ? roundTrip * 1000 : 0;
      if (roundTrip >= 0) this.#roundTrips.push(roundTripMs);
      let inboundLoss = 0;
      let jitterMs = 0;
      if (inbound) {
        const lost = Math.max(0, inbound.packetsLost || 0);
        const received = inbound.packetsReceived || 0;
        this.#countArrivals(received);
        const newlyLost = lost - this.#inbound.lost;
        const newlyReceived = received - this.#inbound.received;
        // Nothing at all arrived since the last sample: the agent's audio is not getting through.
        inboundLoss = newlyReceived > 0 ? newlyLost / (newlyLost + newlyReceived) : this.#samples ? 1 : 0;
        this.#inbound = { lost, received };
        jitterMs = (inbound.jitter || 0) * 1000;
        this.#jitters.push(jitterMs);
      }
      const outboundLoss = remoteInbound && remoteInbound.fractionLost >= 0 ? remoteInbound.fractionLost : 0;
      if (remoteInbound && remoteInbound.fractionLost >= 0) this.#outboundLosses.push(outboundLoss);
      this.#samples += 1;
      const weak =
        Math.max(inboundLoss, outboundLoss) > WEAK_LOSS ||
        roundTripMs > WEAK_ROUND_TRIP_MS ||
        jitterMs > WEAK_JITTER_MS;
      this.#goodSamplesInARow = weak ? 0 : this.#goodSamplesInARow + 1;
      if (weak !== this.#weak && (weak || this.#goodSamplesInARow >= 2)) {
        this.#weak = weak;
        this.#onWeak(weak);
      }
      if (this.#weak) this.#weakSamples += 1;
    }

    // The candidate pair in use: the transport's selected one (Chromium), or the nominated pair that succeeded.
    static #selectedPair(report) {
      let pair = null;
      report.forEach((stat) => {
        if (stat.type === "transport" && stat.selectedCandidatePairId) pair = report.get(stat.selectedCandidatePairId);
      });
      report.forEach((stat) => {
        const inUse = stat.selected || (stat.nominated && stat.state === "succeeded");
        if (!pair && stat.type === "candidate-pair" && inUse) pair = stat;
      });
      return pair;
    }
  }

  // The visitor's microphone during one call. open() asks for it; once it is in the call, followDefaultDevice()
  // keeps up with a headset plugged in or out: the new track goes into the call through `replaceTrack` (awaited, so
  // the old one is stopped only after), then `onSwitched` is told. It applies mute, and measures the level for the
  // meter with an AudioContext, which is why it must be created inside the visitor's click.
  class Microphone {
    #stream = null;
    #muted = false;
    #closed = false;
    #switching = false;
    #replaceTrack;
    #onSwitched;
    #audioContext = null;
    #analyser = null;
    #meterSource = null;
    #animationFrame = 0;
    #onDeviceChange = () => this.#switchDevice();

    constructor({ replaceTrack, onSwitched }) {
      this.#replaceTrack = replaceTrack;
      this.#onSwitched = onSwitched;
      try {
        this.#audioContext = new AudioContext();
        this.#audioContext.resume().catch(ignore);
      } catch (error) {
        // No Web Audio: the call works all the same, without a level meter.
      }
    }

    get track() {
      return this.#stream ? this.#stream.getAudioTracks()[0] || null : null;
    }

    set muted(muted) {
      this.#muted = muted;
      if (this.track) this.track.enabled = !muted;
    }

    // Resolves to the microphone's track (null when the call ended meanwhile); rejects when the visitor or the
    // browser refuses. Every engine's defaults for a microphone (echo cancellation, noise suppression, automatic gain)
    // are what a call wants.
    async open() {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      if (this.#closed) {
        stopTracks(stream);
        return null;
      }
      this.#stream = stream;
      return this.track;
    }

    // A headset plugged in or out: the browser fires "devicechange", and a microphone that went away ends its track.
    // Either way, the default input is asked for again and swapped into the call.
    followDefaultDevice() {
      if (!this.#stream) return;
      navigator.mediaDevices.addEventListener("devicechange", this.#onDeviceChange);
      this.track.addEventListener("ended", this.#onDeviceChange);
    }

    // Calls `onLevel` with the level (0 to 1, 0 while muted) once a frame until the microphone is closed.
    measureLevel(onLevel) {
      const audioContext = this.#audioContext;
      if (!audioContext || !this.#stream) return;
      const analyser = (this.#analyser = audioContext.createAnalyser());
      analyser.fftSize = 512;
      const samples = new Float32Array(analyser.fftSize);
      this.#meterSource = audioContext.createMediaStreamSource(this.#stream);
      this.#meterSource.connect(analyser);
      let level = 0;
      const measure = () => {
        analyser.getFloatTimeDomainData(samples);
        let sumOfSquares = 0;
        for (const sample of samples) sumOfSquares += sample * sample;
        const loudness = Math.min(1, Math.sqrt(sumOfSquares / samples.length) * 5);
        level = this.#muted ? 0 : Math.max(loudness, level * 0.9); // rises at once, falls slowly
        onLevel(level);
        this.#animationFrame = requestAnimationFrame(measure);
      };
      measure();
    }

    close() {
      this.#closed = true;
      cancelAnimationFrame(this.#animationFrame);
      if (navigator.mediaDevices) navigator.mediaDevices.removeEventListener("devicechange", this.#onDeviceChange);
      if (this.track) this.track.removeEventListener("ended", this.#onDeviceChange);
      stopTracks(this.#stream);
      this.#stream = null;
      if (this.#audioContext) this.#audioContext.close().catch(ignore);
    }

    // The mute state carries over to the new track.
    async #switchDevice() {
      if (this.#switching || !this.#stream) return;
      this.#switching = true;
      try {
        const oldStream = this.#stream;
        const oldTrack = this.track;
        const newStream = await navigator.mediaDevices.getUserMedia({ audio: true });
        const newTrack = newStream.getAudioTracks()[0];
        const oldTrackWorks = oldTrack && oldTrack.readyState === "live";
        const sameDevice = oldTrackWorks && newTrack.getSettings().deviceId === oldTrack.getSettings().deviceId;
        if (sameDevice || this.#stream !== oldStream) {
          stopTracks(newStream); // nothing changed for this call, or the call ended meanwhile
          return;
        }
        newTrack.enabled = !this.#muted;
        await this.#replaceTrack(newTrack);
        if (this.#closed) {
          stopTracks(newStream);
          return;
        }
        if (oldTrack) oldTrack.removeEventListener("ended", this.#onDeviceChange);
        newTrack.addEventListener("ended", this.#onDeviceChange);
        this.#stream = newStream;
        stopTracks(oldStream);
        if (this.#meterSource) {
          this.#meterSource.disconnect();
          this.#meterSource = this.#audioContext.createMediaStreamSource(newStream);
          this.#meterSource.connect(this.#analyser);
        }
        this.#onSwitched(newTrack);
      } catch (error) {
        warn(`could not switch to the new microphone (${error.name}); the call keeps the old one.`);
      } finally {
        this.#switching = false;
      }
    }
  }

  // The call's lifecycle events from the plugin as server-sent events, with the call's token in the URL (EventSource
  // cannot send headers). After a drop, EventSource reconnects by itself and sends Last-Event-ID, so the plugin
  // replays what was missed; an event that comes twice is passed on once. `onEvent` gets each event's parsed data.
  class CallEventStream {
    #source;
    #seenIds = new Set();

    constructor({ url, token, onEvent }) {
      const separator = url.includes("?") ? "&" : "?";
      const source = (this.#source = new EventSource(`${url}${separator}token=${encodeURIComponent(token)}`));
      // Every event is unnamed: its type is in its data.
      source.onmessage = (event) => {
        const payload = this.#parse(event.data);
        if (payload) onEvent(payload);
      };
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          warn("lifecycle events stopped; the call goes on.");
        }
      };
    }

    close() {
      this.#source.close();
    }

    // Keeps the stream open a little longer: a call that just ended still sends its summary.
    closeAfter(delayMs) {
      setTimeout(() => this.close(), delayMs);
    }

    // The event's data, or null when it is unreadable or was seen before.
    #parse(data) {
      const payload = parseObject(data);
      if (!payload || typeof payload.type !== "string" || this.#seenIds.has(payload.id)) return null;
      if (payload.id) this.#seenIds.add(payload.id);
      return payload;
    }
  }

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
      if (sentinel && !sentinel.released) sentinel.release().catch(ignore);
    }

    async #request() {
      if (this.#sentinel && !this.#sentinel.released) return;
      try {
        const sentinel = await navigator.wakeLock.request("screen");
        if (this.#wanted) this.#sentinel = sentinel;
        else sentinel.release().catch(ignore); // the call ended while the browser was deciding
      } catch (error) {
        // Refused (battery saver, a permissions policy, the page hidden again): the call goes on without it.
      }
    }
  }

  // One constructable stylesheet for all instances (CSP-safe, unlike style elements). Browsers without constructable
  // stylesheets (Safari before 16.4, WPE) show the widget unstyled: native buttons and text, icons at their own size.
  // Returns whether the stylesheet was adopted.
  let sharedStylesheet = null;
  let warnedUnstyled = false;
  const adoptStylesheet = (root) => {
    if ("adoptedStyleSheets" in ShadowRoot.prototype && "replaceSync" in CSSStyleSheet.prototype) {
      if (!sharedStylesheet) {
        sharedStylesheet = new CSSStyleSheet();
        sharedStylesheet.replaceSync(STYLESHEET);
      }
      root.adoptedStyleSheets = [sharedStylesheet];
      return true;
    }
    if (!warnedUnstyled) {
      warnedUnstyled = true;
      warn("this browser lacks constructable stylesheets, so the widget is unstyled.");
    }
    return false;
  };

  // The widget's colours as the system or the theme attribute asks: dark.
  const DARK_COLOURS =
    "--background:var(--webcall-bg,#1c1f29);--foreground:var(--webcall-fg,#eceef4);" +
    "--focus-ring:color-mix(in srgb,var(--accent),#fff 45%)";
  // Buttons filled with colour have a transparent border: with forced colours (Windows High Contrast) fills are
  // dropped and the border is what shows the button.
  // Custom properties inside the shadow root: --accent, --accent-foreground, --background, --foreground, --muted,
  // --danger (each from its --webcall-* property; otherwise --muted is the foreground faded towards the background
  // and --danger a red tinted towards the foreground, so that both keep their contrast whatever colours a site
  // sets), --focus-ring, --subtle (a faint fill), --line (borders), --radius, --shadow; --level (0 to 1) is set on
  // the meter.
  const STYLESHEET = `
:host{--accent:var(--webcall-accent,#4f46e5);--accent-foreground:var(--webcall-accent-fg,#fff);
--background:var(--webcall-bg,#fff);--foreground:var(--webcall-fg,#171a21);
--muted:var(--webcall-muted,color-mix(in srgb,var(--foreground) 72%,var(--background)));
--danger:var(--webcall-danger,color-mix(in srgb,#e5484d,var(--foreground) 20%));--focus-ring:var(--accent);
--subtle:color-mix(in srgb,var(--foreground) 8%,transparent);
--line:color-mix(in srgb,var(--foreground) 14%,transparent);
--radius:var(--webcall-radius,16px);--shadow:var(--webcall-shadow,0 12px 32px #0003,0 2px 8px #0002);
display:block;max-width:420px;color:var(--foreground);text-align:start;accent-color:var(--accent);
font:14px/1.45 var(--webcall-font,system-ui,sans-serif)}
@media (prefers-color-scheme:dark){:host(:not([theme=light])){${DARK_COLOURS}}}
:host([theme=dark]){${DARK_COLOURS}}
:host([floating=true]){position:fixed;bottom:var(--webcall-offset,20px);
inset-inline-end:var(--webcall-offset,20px);z-index:var(--webcall-z,2147483000);max-width:none}
*{box-sizing:border-box}
[hidden]{display:none!important}
p{margin:0}
button,input{font:inherit;color:inherit;margin:0}
button{cursor:pointer}
button:disabled{cursor:default;opacity:.45}
:focus-visible{outline:2px solid var(--focus-ring);outline-offset:2px}
svg{width:20px;height:20px;flex:none}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.launcher,.orb,.icon-button{display:grid;place-items:center;flex:none;border-radius:50%;padding:0;
border:2px solid #0000;background:var(--accent);color:var(--accent-foreground)}
.launcher{width:56px;height:56px;box-shadow:var(--shadow);transition:transform .15s}
@media (hover:hover){.launcher:hover{transform:scale(1.06)}}
.launcher svg{width:26px;height:26px}
.panel{display:flex;flex-direction:column;gap:14px;padding:16px;background:var(--background);
border:1px solid var(--line);border-radius:var(--radius);box-shadow:var(--shadow)}
:host([floating=true]) .panel{position:absolute;bottom:calc(100% + 12px);inset-inline-end:0;
width:min(var(--webcall-width,360px),calc(100vw - 2 * var(--webcall-offset,20px)));
max-height:calc(100vh - 120px);max-height:calc(100dvh - 120px);overflow:auto;animation:panel-in .18s ease-out}
@keyframes panel-in{from{opacity:0;transform:translateY(8px)}}
.header{display:flex;align-items:center;gap:12px}
.orb{width:40px;height:40px}
.heading{flex:1;min-width:0}
.title{display:block;font-size:15px;font-weight:600}
.status-line{display:flex;gap:8px;color:var(--muted);font-size:13px}
.timer{margin-inline-start:auto;font-variant-numeric:tabular-nums}
:host([state=error]) [role=status]{color:var(--danger)}
.close-button{align-self:flex-start;display:grid;place-items:center;width:44px;height:44px;margin-block-start:-8px;
margin-inline-end:-8px;padding:0;border:0;border-radius:8px;background:none;color:var(--muted)}
.close-button:hover{background:var(--subtle)}
.fine-print{color:var(--muted);font-size:12px}
.note,.summary{padding:8px 12px;border-radius:10px;border:1px solid var(--line)}
.summary strong{display:block;font-size:12px;color:var(--muted)}
.primary-button{display:flex;align-items:center;justify-content:center;gap:8px;width:100%;min-height:44px;
padding:10px 16px;border:2px solid #0000;border-radius:calc(var(--radius) * .75);background:var(--accent);
color:var(--accent-foreground);font-weight:600}
.primary-button:hover:not(:disabled),.hang-up:hover{filter:brightness(1.1)}
.link-button{align-self:center;min-height:44px;padding:0 8px;border:0;background:none;font-size:13px;
text-decoration:underline;text-underline-offset:3px}
.controls{display:flex;align-items:center;gap:10px}
.icon-button{width:44px;height:44px;background:var(--subtle);color:inherit;border:1px solid var(--line)}
.icon-button:hover:not(:disabled){border-color:var(--muted)}
.icon-button[aria-pressed=true]{background:var(--foreground);color:var(--background)}
.hang-up{background:var(--danger);border-color:transparent;color:#fff}
.meter{flex:1;min-width:24px;height:6px;border-radius:3px;background:var(--subtle);overflow:hidden}
.meter i{display:block;height:100%;width:calc(var(--level,0) * 100%);background:var(--accent);
transition:width .08s}
.volume{display:flex;align-items:center;gap:4px;color:var(--muted)}
.volume input{width:72px;height:44px}
.transcript{display:flex;flex-direction:column;gap:6px;min-height:64px;max-height:240px;overflow-y:auto;
overscroll-behavior:contain}
.transcript:empty,.form-error:empty{display:none}
.transcript p{align-self:flex-start;max-width:85%;padding:7px 11px;border-radius:14px;background:var(--subtle);
overflow-wrap:anywhere}
.transcript .user-turn{align-self:flex-end;background:var(--accent);color:var(--accent-foreground)}
.transcript .partial{opacity:.7}
form{display:flex;flex-direction:column;gap:10px}
label{font-weight:500}
[type=tel]{display:block;width:100%;margin-top:4px;padding:9px 11px;border:1px solid var(--muted);
border-radius:10px;background:var(--background)}
[aria-invalid=true]{border-color:var(--danger)}
.checkbox{display:flex;align-items:flex-start;gap:8px;font-weight:400;font-size:13px}
.checkbox input{margin-top:3px}
.form-error{color:var(--danger);font-size:13px}
:host([state=speaking]) :is(.orb,.launcher){animation:pulse 1.3s ease-in-out infinite}
:host([state=thinking]) .orb{animation:breathe 1.2s ease-in-out infinite}
@keyframes pulse{50%{box-shadow:0 0 0 8px color-mix(in srgb,var(--accent) 30%,transparent)}}
@keyframes breathe{50%{opacity:.55}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
@media (forced-colors:active){.meter{border:1px solid}.meter i{forced-color-adjust:none;background:Highlight}}`;

  if (!customElements.get(TAG)) customElements.define(TAG, WebCall);

  // Zero-markup: <script data-agent=…> adds a floating widget; the script's other data-* attributes become its
  // attributes (but no event handlers or style).
  if (SCRIPT && SCRIPT.hasAttribute("data-agent")) {
    const addFloatingWidget = () => {
      const widget = document.createElement(TAG);
      widget.setAttribute("floating", "true");
      widget.setAttribute("endpoint", DEFAULT_ENDPOINT);
      for (const { name, value } of SCRIPT.attributes) {
        if (/^data-(?!on|style$)/.test(name)) widget.setAttribute(name.slice("data-".length), value);
      }
      document.body.append(widget);
    };
    if (document.body) addFloatingWidget();
    else addEventListener("DOMContentLoaded", addFloatingWidget);
  }
})();
