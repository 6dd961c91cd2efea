/* ncap ranking service: the browser front-end (no build step, no third-party code).
 *
 * Served under the Content-Security-Policy `script-src 'self'; style-src 'self'`: no inline script or style,
 * no eval. The DOM is built with createElement + textContent only, so every string that comes from a client
 * or the server (dataset labels, class names, candidate labels, error text) is shown as text, never parsed as
 * HTML. The service token lives in sessionStorage and travels only in the Authorization header.
 *
 * Routes (location.hash): #/new, #/jobs, #/job/<id>; without a token, the sign-in form whatever the route.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "ncap.token";
  var POLL_MS = 1000;
  var LIST_REFRESH_MS = 3000;
  var FINAL = ["done", "failed", "cancelled"];
  var NOT_RECIPE = ["candidates", "dataset", "pruning_report"];
  var PLOT_TITLES = {
    "trajectories.png": "β_eff trajectories and validation accuracy per epoch",
    "predicted_vs_observed.png": "Predicted final accuracy against the last observed accuracy",
    "pareto.png": "Ranking score against latency (Pareto front)"
  };
  var ERROR_WIDTH = 60;  // service/ranking.py: longer errors are cut in the table
  var SCORE_COLUMNS = { val_acc: "Ranked by: last accuracy", tse_ema: "Ranked by: −TSE-EMA" };

  var state = {
    catalog: null,
    ctrl: null,          // AbortController of the current view: navigation aborts its requests and timers
    urls: [],            // object URLs of the current view (plots), revoked on navigation
    signInReason: null,
    lastRoute: null
  };

  // ------------------------------------------------------------------------------------------ DOM helpers
  /** el("p", {class: "x", text: "..."}, child, ...): an element; attrs are set as attributes, except
   *  class/text/on (a map of event listeners) and the properties hidden/checked/disabled/value/selected. */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var props = ["hidden", "checked", "disabled", "value", "selected", "open", "required", "multiple"];
    Object.keys(attrs || {}).forEach(function (key) {
      var v = attrs[key];
      if (v === undefined || v === null || v === false) return;
      if (key === "class") node.className = v;
      else if (key === "text") node.textContent = String(v);
      else if (key === "on") Object.keys(v).forEach(function (ev) { node.addEventListener(ev, v[ev]); });
      else if (key === "dataset") Object.keys(v).forEach(function (d) { node.dataset[d] = v[d]; });
      else if (props.indexOf(key) >= 0) node[key] = v;
      else node.setAttribute(key, v === true ? "" : String(v));
    });
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  /** append(node, child, ...): children may be nodes, strings (as text), arrays of them, or null (skipped). */
  function append(node) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function $(id) { return document.getElementById(id); }

  var uid = 0;
  function nextId(prefix) { uid += 1; return prefix + "-" + uid; }

  // ---------------------------------------------------------------------------------------------- formats
  function fmtBytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return "—";
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    s = Math.max(0, s);
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    var m = Math.floor(s / 60), sec = Math.round(s % 60);
    if (sec === 60) { m += 1; sec = 0; }
    if (m < 60) return m + " min " + sec + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  /** Local time as "2026-12-07 13:05:09" (compact and unambiguous whatever the browser's locale). */
  function fmtTime(ts) {
    if (!ts) return "—";
    var d = new Date(ts * 1000);
    var p2 = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p2(d.getMonth() + 1) + "-" + p2(d.getDate()) + " " +
      p2(d.getHours()) + ":" + p2(d.getMinutes()) + ":" + p2(d.getSeconds());
  }

  function pct(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return "—";
    return (100 * x).toFixed(digits === undefined ? 1 : digits);
  }

  function fmtEpoch(e) {
    if (e === null || e === undefined || !isFinite(e)) return "0";
    return String(Math.round(e * 100) / 100);
  }

  function fmtParams(n) {
    if (n === null || n === undefined || !isFinite(n)) return "—";
    return (n / 1e6).toFixed(2) + "M";
  }

  function shortId(id) { return String(id).slice(0, 8); }
  function isFinal(s) { return FINAL.indexOf(s) >= 0; }

  // ------------------------------------------------------------------------------------------------ API
  function ApiError(status, message, body) {
    this.name = "ApiError";
    this.status = status;
    this.message = message;
    this.body = body;
  }
  ApiError.prototype = Object.create(Error.prototype);

  function getToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function setToken(t) {
    try { window.sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* private mode: this page load only */ }
  }
  function dropToken() {
    try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ }
  }

  function abortError() {
    var e = new Error("aborted");
    e.name = "AbortError";
    return e;
  }

  function sleep(ms, signal) {
    return new Promise(function (resolve, reject) {
      if (signal && signal.aborted) { reject(abortError()); return; }
      var t = setTimeout(function () {
        if (signal) signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      function onAbort() { clearTimeout(t); reject(abortError()); }
      if (signal) signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async function errorMessage(resp) {
    var text = "";
    try { text = await resp.text(); } catch (e) { text = ""; }
    var body = null;
    try { body = JSON.parse(text); } catch (e) { body = null; }
    if (Array.isArray(body) && body.length === 1) body = body[0];
    var msg = body && typeof body.error === "string" ? body.error
      : (text && text.length < 400 ? text : "HTTP " + resp.status + " " + (resp.statusText || ""));
    return { message: String(msg).split("\n")[0], body: body };
  }

  var connection = { failures: 0 };
  function showConnectionLost(attempt, delay) {
    var box = $("connection");
    box.textContent = "Connection lost, retrying… (attempt " + attempt + ", next in " + Math.round(delay / 1000) + " s)";
    box.hidden = false;
  }
  function hideConnectionLost() {
    var box = $("connection");
    if (!box.hidden) { box.hidden = true; box.textContent = ""; }
  }

  /** POST a JSON body (or a FormData as multipart) with the bearer token. Returns parsed JSON (or a Blob with
   *  opts.as = "blob"). A lost connection (fetch throws) is retried with a visible notice until it comes back
   *  or the view is left (opts.retry = false: no retry, the caller says what happened). 401 signs out. */
  async function api(route, payload, opts) {
    opts = opts || {};
    var signal = opts.signal || (state.ctrl && state.ctrl.signal);
    var token = getToken();
    if (!token) { signOut("Sign in to continue."); throw abortError(); }
    var headers = { "Authorization": "Bearer " + token, "Accept": "application/json, image/png" };
    var body;
    if (opts.form) body = opts.form;
    else { headers["Content-Type"] = "application/json"; body = JSON.stringify(payload || {}); }
    var attempt = 0;
    for (;;) {
      var resp;
      try {
        resp = await fetch(route, { method: "POST", headers: headers, body: body, signal: signal,
                                    cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
      } catch (err) {
        if (err && err.name === "AbortError") throw err;
        if (signal && signal.aborted) throw abortError();
        if (opts.retry === false) { var e = new ApiError(0, "connection lost"); e.network = true; throw e; }
        attempt += 1;
        var delay = Math.min(1000 * Math.pow(2, attempt - 1), 5000);
        showConnectionLost(attempt, delay);
        await sleep(delay, signal);
        continue;
      }
      hideConnectionLost();
      if (resp.ok) return opts.as === "blob" ? resp.blob() : resp.json();
      var err2 = await errorMessage(resp);
      if (resp.status === 401) {
        signOut(err2.message);
        throw abortError();
      }
      throw new ApiError(resp.status, err2.message, err2.body);
    }
  }

  // --------------------------------------------------------------------------------------------- banner
  function showBanner(message, kind) {
    var b = $("banner");
    clear(b);
    b.className = "banner banner-" + (kind || "error");
    append(b, el("p", { class: "banner-text", text: message }));
    append(b, el("button", { type: "button", class: "link-button banner-close", text: "Dismiss",
                             on: { click: hideBanner } }));
    b.hidden = false;
  }
  function hideBanner() { var b = $("banner"); b.hidden = true; clear(b); }

  /** What to tell the user about a failed call (429 and lost connections get their own words). */
  function describe(err) {
    if (err.status === 429) return "The queue is full: " + err.message;
    if (err.network) return "Connection lost: the server could not be reached. " +
      "Check the jobs list before trying again.";
    if (err.status) return err.message + " (HTTP " + err.status + ")";
    return String(err.message || err);
  }

  function handleError(err) {
    if (err && err.name === "AbortError") return;
    if (window.console) console.warn("ncap:", err && err.message);
    showBanner(describe(err));
  }

  // -------------------------------------------------------------------------------------------- routing
  function parseRoute() {
    var h = location.hash || "";
    var m = /^#\/job\/([A-Za-z0-9_-]{1,64})$/.exec(h);
    if (m) return { name: "job", id: m[1] };
    if (h === "#/jobs") return { name: "jobs" };
    return { name: "new" };
  }

  function leaveView() {
    if (state.ctrl) state.ctrl.abort();
    state.ctrl = new AbortController();
    state.urls.forEach(function (u) { URL.revokeObjectURL(u); });
    state.urls = [];
    hideConnectionLost();
    return state.ctrl;
  }

  function signOut(reason) {
    dropToken();
    state.catalog = null;
    state.signInReason = reason || null;
    render();
  }

  async function render() {
    var ctrl = leaveView();
    var root = clear($("view"));
    var nav = $("nav");
    if (!getToken()) {
      nav.hidden = true;
      renderSignIn(root, state.signInReason);
      return;
    }
    try {
      if (!state.catalog) {
        append(root, el("p", { class: "loading", text: "Loading the catalog…" }));
        state.catalog = await api("/catalog", {}, { signal: ctrl.signal });
        if (ctrl.signal.aborted) return;
        clear(root);
      }
    } catch (err) {
      if (err.name !== "AbortError") { clear(root); handleError(err); }
      return;
    }
    state.signInReason = null;
    var user = state.catalog.user || {};
    $("who").textContent = user.name ? "Signed in as " + user.name + (user.role ? " (" + user.role + ")" : "") : "";
    nav.hidden = false;
    var route = parseRoute();
    Array.prototype.forEach.call(nav.querySelectorAll("a[data-route]"), function (a) {
      if (a.dataset.route === route.name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    var key = route.name + ":" + (route.id || "");
    if (key !== state.lastRoute) hideBanner();
    state.lastRoute = key;
    if (route.name === "jobs") renderJobs(root, ctrl);
    else if (route.name === "job") renderJob(root, ctrl, route.id);
    else renderNew(root, ctrl);
    var h1 = root.querySelector("h1");
    if (h1 && document.activeElement === document.body) h1.focus({ preventScroll: true });
  }

  function heading(text) { return el("h1", { tabindex: "-1", text: text }); }

  // -------------------------------------------------------------------------------------------- sign in
  function renderSignIn(root, reason) {
    var input = el("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false",
                              autocapitalize: "off", required: true, "aria-describedby": "token-help" });
    var error = el("p", { id: "signin-error", class: "field-error", role: "alert" });
    if (reason) error.textContent = reason;
    else error.hidden = true;
    var form = el("form", { class: "card signin", "aria-labelledby": "signin-title", on: { submit: onSubmit } },
      el("h1", { id: "signin-title", tabindex: "-1", text: "Sign in" }),
      el("p", { text: "Give the service token (or your API key) to rank models on this server." }),
      el("div", { class: "field" },
        el("label", { for: "token", text: "Service token" }),
        input,
        el("p", { id: "token-help", class: "hint",
                  text: "Kept in this browser tab only (sessionStorage) and sent only in the Authorization header." })),
      error,
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Sign in" })));
    append(root, form);
    if (reason) input.setAttribute("aria-invalid", "true");
    input.focus();

    function onSubmit(ev) {
      ev.preventDefault();
      var token = input.value.trim();
      if (!token) {
        error.textContent = "Enter the token.";
        error.hidden = false;
        input.focus();
        return;
      }
      setToken(token);
      input.value = "";
      state.signInReason = null;
      if (!location.hash || location.hash === "#") history.replaceState(null, "", "#/new");
      render();
    }
  }

  // ---------------------------------------------------------------------------------- recipe from schema
  function deref(node, root) {
    var guard = 0;
    while (node && node.$ref && guard < 10) {
      var m = /^#\/(\$defs|definitions)\/(.+)$/.exec(node.$ref);
      var target = m && root[m[1]] ? root[m[1]][m[2]] : null;
      node = Object.assign({}, target || {}, node);
      delete node.$ref;
      guard += 1;
    }
    if (node && Array.isArray(node.allOf) && node.allOf.length === 1) {
      var inner = deref(node.allOf[0], root);
      node = Object.assign({}, inner, node);
      delete node.allOf;
    }
    return node || {};
  }

  /** One form field's description from a JSON-schema property: kind (enum|number|boolean|string|json),
   *  bounds, default, nullable, help text. */
  function fieldSpec(name, prop, root) {
    var p = deref(prop, root);
    var nullable = false;
    var base = p;
    var alts = p.anyOf || p.oneOf;
    if (Array.isArray(alts)) {
      var opts = alts.map(function (o) { return deref(o, root); });
      nullable = opts.some(function (o) { return o.type === "null"; });
      var rest = opts.filter(function (o) { return o.type !== "null"; });
      base = rest.length === 1 ? rest[0] : { type: "json" };
    }
    var type = base.type;
    if (Array.isArray(type)) {
      nullable = nullable || type.indexOf("null") >= 0;
      var nn = type.filter(function (t) { return t !== "null"; });
      type = nn.length === 1 ? nn[0] : "json";
    }
    var choices = Array.isArray(base.enum) ? base.enum.slice()
      : (base.const !== undefined ? [base.const] : null);
    if (choices && choices.indexOf(null) >= 0) {
      nullable = true;
      choices = choices.filter(function (c) { return c !== null; });
    }
    var kind = choices ? "enum"
      : (type === "integer" || type === "number") ? "number"
      : type === "boolean" ? "boolean"
      : type === "string" ? "string" : "json";
    var pick = function (k) { return p[k] !== undefined ? p[k] : base[k]; };
    return {
      name: name,
      title: p.title || base.title || name,
      description: p.description || base.description || "",
      hasDefault: Object.prototype.hasOwnProperty.call(p, "default"),
      default: p.default,
      nullable: nullable,
      kind: kind,
      integer: type === "integer",
      choices: choices,
      minimum: pick("minimum"),
      maximum: pick("maximum"),
      exclusiveMinimum: pick("exclusiveMinimum"),
      exclusiveMaximum: pick("exclusiveMaximum"),
      maxLength: pick("maxLength")
    };
  }

  function rangeHint(f) {
    var parts = [];
    if (f.minimum !== undefined) parts.push("≥ " + f.minimum);
    if (f.exclusiveMinimum !== undefined) parts.push("> " + f.exclusiveMinimum);
    if (f.maximum !== undefined) parts.push("≤ " + f.maximum);
    if (f.exclusiveMaximum !== undefined) parts.push("< " + f.exclusiveMaximum);
    var text = parts.length ? (f.integer ? "Whole number " : "Number ") + parts.join(", ") + "." : "";
    if (f.nullable) text += (text ? " " : "") + "Empty = null (none).";
    if (f.hasDefault) text += (text ? " " : "") + "Default: " + (f.default === null ? "null" : JSON.stringify(f.default)) + ".";
    return text;
  }

  /** The control of one recipe field, with its label, help text and error slot. */
  function recipeField(f, limits) {
    var id = "field-" + f.name;
    var helpId = id + "-help", errId = id + "-error";
    var control;
    if (f.kind === "enum") {
      control = el("select", { id: id, name: f.name });
      if (f.nullable) append(control, el("option", { value: "", text: "none (null)" }));
      f.choices.forEach(function (c, i) {
        append(control, el("option", { value: String(i), text: String(c), selected: f.hasDefault && c === f.default }));
      });
      if (f.hasDefault && f.default === null) control.value = "";
    } else if (f.kind === "number") {
      var max = f.maximum;
      if (f.name === "epochs" && limits && limits.max_epochs) max = max === undefined ? limits.max_epochs : Math.min(max, limits.max_epochs);
      f.maximum = max;
      control = el("input", {
        id: id, name: f.name, type: "number", inputmode: f.integer ? "numeric" : "decimal",
        step: f.integer ? "1" : "any",
        min: f.minimum !== undefined ? f.minimum : f.exclusiveMinimum,
        max: max !== undefined ? max : f.exclusiveMaximum,
        placeholder: f.nullable ? "none" : null
      });
      if (f.hasDefault && f.default !== null) control.value = String(f.default);
    } else if (f.kind === "boolean") {
      control = el("input", { id: id, name: f.name, type: "checkbox", checked: f.default === true });
    } else {
      control = el("input", { id: id, name: f.name, type: "text", spellcheck: "false", autocomplete: "off",
                              maxlength: f.kind === "string" ? f.maxLength : null,
                              placeholder: f.nullable ? "none" : null });
      if (f.hasDefault && f.default !== null) {
        control.value = f.kind === "string" ? String(f.default) : JSON.stringify(f.default);
      }
    }
    control.setAttribute("aria-describedby", helpId + " " + errId);
    var label = el("label", { for: id },
      el("span", { class: "field-title", text: f.title }), " ", el("code", { class: "field-name", text: f.name }));
    var help = el("p", { id: helpId, class: "hint" });
    append(help, f.description);
    var range = rangeHint(f);
    if (range) append(help, el("span", { class: "range", text: " " + range }));
    var wrap = el("div", { class: "field field-" + f.kind, dataset: { field: f.name } },
      f.kind === "boolean" ? el("div", { class: "check" }, control, label) : [label, control],
      help,
      el("p", { id: errId, class: "field-error", role: "alert", hidden: true }));
    return { spec: f, control: control, wrap: wrap, error: wrap.querySelector(".field-error") };
  }

  var UNSET = {};

  function sameValue(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  /** The value a recipe control holds: {value} or {error}; value UNSET means "leave the default". */
  function readField(field) {
    var f = field.spec, c = field.control;
    if (f.kind === "enum") {
      if (c.value === "") return { value: null };
      return { value: f.choices[Number(c.value)] };
    }
    if (f.kind === "boolean") return { value: c.checked };
    var raw = c.value.trim();
    if (f.kind === "number") {
      if (c.validity && c.validity.badInput) return { error: "not a number" };
      if (raw === "") return f.nullable ? { value: null } : { value: UNSET };
      var n = Number(raw);
      if (!isFinite(n)) return { error: "not a number" };
      if (f.integer && !Number.isInteger(n)) return { error: "give a whole number" };
      return { value: n };
    }
    if (f.kind === "string") {
      if (raw === "" && f.nullable) return { value: null };
      return { value: c.value };
    }
    if (raw === "") return f.nullable ? { value: null } : { value: UNSET };
    try { return { value: JSON.parse(raw) }; } catch (e) { return { error: "not valid JSON" }; }
  }

  function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  /** Which part of the form a server error names: "dataset", "candidates", a recipe field, or null. */
  function errorTarget(text, names) {
    if (/^invalid dataset\b/i.test(text) || /config\.dataset\b/.test(text)) return "dataset";
    if (/^(config\.)?candidates?\b/.test(text) || /\bconfig\.candidates\b/.test(text)) return "candidates";
    var best = null, bestAt = Infinity;
    names.forEach(function (name) {
      var re = new RegExp("(^|[^A-Za-z0-9_])(config\\." + escapeRe(name) + "(?![A-Za-z0-9_])|" +
                          escapeRe(name) + "\\s*[=:])");
      var m = re.exec(text);
      if (m && m.index < bestAt) { best = name; bestAt = m.index; }
    });
    if (best) return best;
    if (/\bcandidates?\b/.test(text) && /^(zoo )?candidates?\b|\bcandidate '/.test(text)) return "candidates";
    if (/\bdataset\b/i.test(text)) return "dataset";
    return null;
  }

  // ----------------------------------------------------------------------------------------- new ranking
  function renderNew(root, ctrl) {
    var cat = state.catalog || {};
    var limits = cat.limits || {};
    var maxCand = limits.max_candidates || Infinity;
    var datasets = cat.datasets || [];
    var schema = cat.recipe_schema || {};
    var errors = {};  // slot name -> {box, focus}

    append(root, heading("New ranking"));
    append(root, el("p", { class: "lead",
      text: "Upload a dataset or pick a named one, choose the candidate models and start a ranking. " +
            "Each candidate is fine-tuned for a few epochs and ranked by the recipe's ranking rule (the ranker field; by default the last validation accuracy), with β_eff's prediction of its final accuracy beside it." }));

    var form = el("form", { class: "new-ranking", "aria-label": "New ranking", on: { submit: onSubmit } });
    append(root, form);

    // -- dataset
    var dsNamedRadio = el("input", { type: "radio", name: "dataset-source", id: "source-named", value: "named",
                                     checked: datasets.length > 0 });
    var dsFileRadio = el("input", { type: "radio", name: "dataset-source", id: "source-file", value: "file",
                                    checked: datasets.length === 0 });
    var dsSelect = el("select", { id: "dataset-name", "aria-describedby": "dataset-name-help" });
    datasets.forEach(function (d) {
      append(dsSelect, el("option", { value: d.name, text: d.name, selected: d.name === "digits" }));
    });
    var dsHelp = el("p", { id: "dataset-name-help", class: "hint" });
    var fileInput = el("input", { id: "dataset-file", type: "file", accept: ".zip,.npz",
                                  "aria-describedby": "dataset-file-info dataset-file-help dataset-error" });
    var fileInfo = el("p", { id: "dataset-file-info", class: "file-info", "aria-live": "polite" });
    var dsError = el("p", { id: "dataset-error", class: "field-error", role: "alert", hidden: true });
    errors.dataset = { box: dsError, focus: function () { return dsFileRadio.checked ? fileInput : dsSelect; } };

    function describeDataset() {
      var d = datasets.filter(function (x) { return x.name === dsSelect.value; })[0];
      dsHelp.textContent = d ? d.description || "" : "";
    }
    function syncSource() {
      var named = dsNamedRadio.checked;
      dsSelect.disabled = !named;
      fileInput.disabled = named;
      $("named-box").classList.toggle("inactive", !named);
      $("file-box").classList.toggle("inactive", named);
      clearSlot("dataset");
    }
    function checkFile() {
      clearSlot("dataset");
      var file = fileInput.files && fileInput.files[0];
      if (!file) { fileInfo.textContent = ""; return true; }
      fileInfo.textContent = file.name + " — " + fmtBytes(file.size);
      if (limits.max_upload_bytes && file.size > limits.max_upload_bytes) {
        setSlot("dataset", "This file is " + fmtBytes(file.size) + ", more than the server accepts (" +
                fmtBytes(limits.max_upload_bytes) + "). Choose a smaller file.");
        return false;
      }
      if (!/\.(zip|npz)$/i.test(file.name)) {
        setSlot("dataset", "Choose a .zip (an ImageFolder: one folder per class) or a .npz (arrays x and y).");
        return false;
      }
      return true;
    }
    dsSelect.addEventListener("change", describeDataset);
    dsNamedRadio.addEventListener("change", syncSource);
    dsFileRadio.addEventListener("change", syncSource);
    fileInput.addEventListener("change", checkFile);

    append(form, el("fieldset", { class: "card", id: "dataset-fieldset" },
      el("legend", { text: "Dataset" }),
      el("div", { class: "choice", id: "named-box", hidden: datasets.length === 0 },
        el("div", { class: "check" }, dsNamedRadio, el("label", { for: "source-named", text: "A named dataset" })),
        el("div", { class: "field indent" },
          el("label", { for: "dataset-name", text: "Named dataset" }), dsSelect, dsHelp)),
      el("div", { class: "choice", id: "file-box" },
        el("div", { class: "check" }, dsFileRadio, el("label", { for: "source-file", text: "Upload a file" })),
        el("div", { class: "field indent" },
          el("label", { for: "dataset-file", text: "Dataset file (.zip or .npz)" }), fileInput, fileInfo,
          el("p", { id: "dataset-file-help", class: "hint",
                    text: "A .zip of an ImageFolder (one folder per class) or a .npz with arrays x and y" +
                          (limits.max_upload_bytes ? "; at most " + fmtBytes(limits.max_upload_bytes) + "." : ".") }))),
      dsError));

    // -- candidates
    var search = el("input", { id: "candidate-search", type: "search", autocomplete: "off", spellcheck: "false",
                               "aria-controls": "candidate-list", "aria-describedby": "candidate-count" });
    var count = el("p", { id: "candidate-count", class: "hint", "aria-live": "polite" });
    var list = el("ul", { id: "candidate-list", class: "candidate-list" });
    var noMatch = el("p", { class: "hint", hidden: true, text: "No candidate matches the search." });
    var custom = el("input", { id: "candidate-custom", type: "text", autocomplete: "off", spellcheck: "false",
                               placeholder: "resnet18=random or label:arch=random",
                               "aria-describedby": "candidate-custom-help candidates-error" });
    var candError = el("p", { id: "candidates-error", class: "field-error", role: "alert", hidden: true });
    errors.candidates = { box: candError, focus: function () { return search; } };
    var rows = [];

    function candidateRow(c, isCustom) {
      var id = nextId("cand");
      var box = el("input", { type: "checkbox", id: id, value: c.name, checked: !!isCustom,
                              on: { change: syncCount } });
      var meta = [];
      meta.push(isCustom ? "custom" : (c.kind || "?"));
      if (c.arch && c.arch !== c.name) meta.push(c.arch);
      if (c.params_m !== null && c.params_m !== undefined) meta.push(Number(c.params_m).toFixed(1) + " M params");
      if (Array.isArray(c.input_size)) meta.push("native " + c.input_size.join("×"));
      if (c.built === false) meta.push("not built on this server");
      var li = el("li", { class: "candidate" + (isCustom ? " custom" : "") },
        box,
        el("label", { for: id },
          el("span", { class: "cand-name", text: c.name }),
          el("span", { class: "cand-meta", text: meta.join(" · ") }),
          c.description ? el("span", { class: "cand-desc", text: c.description }) : null));
      var hay = [c.name, c.kind, c.arch, c.description].filter(Boolean).join(" ").toLowerCase();
      var row = { li: li, box: box, hay: hay, name: c.name };
      rows.push(row);
      return row;
    }

    function selected() {
      return rows.filter(function (r) { return r.box.checked; }).map(function (r) { return r.name; });
    }

    function syncCount() {
      var n = selected().length;
      var full = n >= maxCand;
      rows.forEach(function (r) { r.box.disabled = full && !r.box.checked; });
      count.textContent = n + " selected" + (isFinite(maxCand) ? " (at most " + maxCand + ")" : "") +
        (n === 0 ? "; none = the server's demo candidates" : "") + (full ? ". The limit is reached." : ".");
      clearSlot("candidates");
    }

    function filter() {
      var q = search.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (r) {
        var hit = !q || q.split(/\s+/).every(function (w) { return r.hay.indexOf(w) >= 0; });
        r.li.hidden = !hit;
        if (hit) shown += 1;
      });
      noMatch.hidden = shown > 0;
    }

    function addCustom() {
      var entries = custom.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      if (!entries.length) { custom.focus(); return; }
      for (var i = 0; i < entries.length; i++) {
        var entry = entries[i];
        var existing = rows.filter(function (r) { return r.name === entry; })[0];
        if (existing) { existing.box.checked = true; continue; }
        if (selected().length >= maxCand) {
          syncCount();
          setSlot("candidates", "At most " + maxCand + " candidates per job.");
          return;
        }
        var row = candidateRow({ name: entry }, true);
        list.insertBefore(row.li, list.firstChild);
      }
      custom.value = "";
      syncCount();
      filter();
    }

    (cat.candidates || []).forEach(function (c) { append(list, candidateRow(c, false).li); });
    search.addEventListener("input", filter);
    custom.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") { ev.preventDefault(); addCustom(); }
    });

    append(form, el("fieldset", { class: "card", id: "candidates-fieldset" },
      el("legend", { text: "Candidates" }),
      el("div", { class: "field" },
        el("label", { for: "candidate-search", text: "Search candidates" }), search, count),
      el("div", { class: "list-box", tabindex: "-1" }, list, noMatch),
      el("div", { class: "field" },
        el("label", { for: "candidate-custom", text: "Another candidate (timm architecture)" }),
        el("div", { class: "inline" }, custom,
          el("button", { type: "button", id: "candidate-add", text: "Add", on: { click: addCustom } })),
        el("p", { id: "candidate-custom-help", class: "hint",
                  text: "arch=random trains from random weights; label:arch=random names it in the results. " +
                        "Separate several with commas." })),
      candError));

    // -- recipe, generated from the server's schema
    var fields = [];
    var props = schema.properties || {};
    Object.keys(props).forEach(function (name) {
      if (NOT_RECIPE.indexOf(name) >= 0) return;
      var f = recipeField(fieldSpec(name, props[name], schema), limits);
      fields.push(f);
      errors[name] = { box: f.error, focus: function () { return f.control; } };
    });
    var names = fields.map(function (f) { return f.spec.name; });
    var recipeGrid = el("div", { class: "recipe-grid" }, fields.map(function (f) { return f.wrap; }));
    append(form, el("fieldset", { class: "card", id: "recipe-fieldset" },
      el("legend", { text: "Recipe" }),
      el("p", { class: "hint", text: "Every candidate gets the same recipe. Only the settings you change are sent; " +
                                     "the rest keep the server's defaults." }),
      el("details", { class: "recipe", open: true },
        el("summary", { text: "Recipe settings (" + fields.length + ")" }), recipeGrid)));

    var submitBtn = el("button", { type: "submit", class: "primary", id: "submit-job", text: "Start ranking" });
    var formStatus = el("p", { class: "hint", id: "submit-status", role: "status", "aria-live": "polite" });
    append(form, el("div", { class: "actions" }, submitBtn, formStatus));

    describeDataset();
    syncSource();
    syncCount();

    function setSlot(name, message) {
      var slot = errors[name];
      if (!slot) return false;
      slot.box.textContent = message;
      slot.box.hidden = false;
      var c = slot.focus();
      if (c) c.setAttribute("aria-invalid", "true");
      var details = slot.box.closest("details");
      if (details) details.open = true;
      return true;
    }
    function clearSlot(name) {
      var slot = errors[name];
      if (!slot) return;
      slot.box.hidden = true;
      slot.box.textContent = "";
      var c = slot.focus();
      if (c) c.removeAttribute("aria-invalid");
    }
    function clearAll() { Object.keys(errors).forEach(clearSlot); hideBanner(); }
    function focusSlot(name) {
      var c = errors[name] && errors[name].focus();
      if (c) { c.focus(); c.scrollIntoView({ block: "center" }); }
    }

    fields.forEach(function (f) {
      f.control.addEventListener("change", function () { clearSlot(f.spec.name); });
    });

    async function onSubmit(ev) {
      ev.preventDefault();
      clearAll();
      var config = {};
      var first = null;
      var cands = selected();
      if (cands.length > maxCand) { setSlot("candidates", "At most " + maxCand + " candidates per job."); first = first || "candidates"; }
      if (cands.length) config.candidates = cands;
      var file = null;
      if (dsFileRadio.checked) {
        file = fileInput.files && fileInput.files[0];
        if (!file) { setSlot("dataset", "Choose a dataset file, or pick a named dataset."); first = first || "dataset"; }
        else if (!checkFile()) first = first || "dataset";
      } else if (dsSelect.value) {
        config.dataset = dsSelect.value;
      }
      fields.forEach(function (f) {
        var r = readField(f);
        if (r.error) { setSlot(f.spec.name, f.spec.name + ": " + r.error); first = first || f.spec.name; return; }
        if (r.value === UNSET) return;
        if (f.spec.hasDefault && sameValue(r.value, f.spec.default)) return;
        config[f.spec.name] = r.value;
      });
      if (first) { focusSlot(first); return; }

      var fd = new FormData();
      fd.append("config", JSON.stringify(config));
      if (file) fd.append("dataset", file, file.name);
      submitBtn.disabled = true;
      formStatus.textContent = file ? "Uploading " + fmtBytes(file.size) + " and submitting…" : "Submitting…";
      try {
        var job = await api("/jobs/submit", null, { form: fd, retry: false, signal: ctrl.signal });
        formStatus.textContent = "";
        location.hash = "#/job/" + encodeURIComponent(job.job_id);
      } catch (err) {
        if (err.name === "AbortError") return;
        formStatus.textContent = "";
        submitBtn.disabled = false;
        showSubmitError(err, !!file);
      }
    }

    function showSubmitError(err, uploaded) {
      if (err.status === 400) {
        var parts = err.message.split(/; (?=config\.)/);
        var placed = [];
        var rest = [];
        parts.forEach(function (p) {
          var target = errorTarget(p, names);
          if (target && setSlot(target, p)) placed.push(target);
          else rest.push(p);
        });
        if (rest.length) showBanner("The server refused the job: " + rest.join("; "));
        if (placed.length) focusSlot(placed[0]);
        return;
      }
      if (err.status === 413 && uploaded) {
        setSlot("dataset", err.message);
        focusSlot("dataset");
        return;
      }
      if (err.status === 429) {
        showBanner("The queue is full: " + err.message + ". Your job was not submitted; try again later.");
        return;
      }
      showBanner(describe(err));
    }
  }

  // ------------------------------------------------------------------------------------------ jobs list
  function stateBadge(s, label) {
    return el("span", { class: "badge state-" + String(s).replace(/[^a-z]/g, ""), text: label || s });
  }

  function cell(label, content, cls) {
    return el("td", { dataset: { label: label }, class: cls || null }, el("div", { class: "cell" }, content));
  }

  function renderJobs(root, ctrl) {
    var filterSel = el("select", { id: "jobs-state" },
      el("option", { value: "", text: "all" }),
      ["queued", "running", "done", "failed", "cancelled"].map(function (s) { return el("option", { value: s, text: s }); }));
    var refresh = el("button", { type: "button", id: "jobs-refresh", text: "Refresh" });
    var body = el("div", { id: "jobs-body" });
    var live = el("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    var page = { offset: 0, limit: 25 };
    var timer = null;
    var lastJson = null;

    append(root, heading("Jobs"));
    append(root, el("div", { class: "toolbar" },
      el("div", { class: "field inline-field" }, el("label", { for: "jobs-state", text: "Show" }), filterSel),
      refresh,
      el("a", { href: "#/new", class: "button-link", text: "New ranking" })));
    append(root, live, body);

    ctrl.signal.addEventListener("abort", function () { clearTimeout(timer); }, { once: true });
    filterSel.addEventListener("change", function () { page.offset = 0; load(true); });
    refresh.addEventListener("click", function () { load(true); });

    async function load(force) {
      clearTimeout(timer);
      var payload = { limit: page.limit, offset: page.offset };
      if (filterSel.value) payload.state = filterSel.value;
      var data;
      try {
        data = await api("/jobs/list", payload, { signal: ctrl.signal });
      } catch (err) { handleError(err); return; }
      if (ctrl.signal.aborted) return;
      var json = JSON.stringify(data);
      if (force || json !== lastJson) draw(data);
      lastJson = json;
      var active = data.jobs.some(function (j) { return !isFinal(j.state); });
      timer = setTimeout(function () { if (!ctrl.signal.aborted) load(false); }, active ? LIST_REFRESH_MS : 4 * LIST_REFRESH_MS);
    }

    function draw(data) {
      var focusedKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
      clear(body);
      if (!data.jobs.length) {
        append(body, el("p", { class: "empty" }, page.offset ? "No more jobs. " : "No jobs yet. ",
          el("a", { href: "#/new", text: "Start a new ranking" }), "."));
      } else {
        var now = Date.now() / 1000;
        var table = el("table", { class: "data stack", id: "jobs-table" },
          el("caption", { class: "visually-hidden", text: "Your jobs, newest first" }),
          el("thead", null, el("tr", null, ["Job", "Status", "Dataset", "Candidates", "Created", "Duration", "Actions"]
            .map(function (h) { return el("th", { scope: "col", text: h }); }))),
          el("tbody", null, data.jobs.map(function (j) {
            var dur = j.finished_at ? fmtDuration(j.finished_at - j.created_at)
              : (isFinal(j.state) ? "—" : fmtDuration(now - j.created_at) + " so far");
            var actions = el("div", { class: "row-actions" });
            if (!isFinal(j.state)) {
              append(actions, el("button", { type: "button", class: "danger-outline", text: "Cancel",
                "aria-label": "Cancel job " + shortId(j.job_id), dataset: { key: "cancel-" + j.job_id },
                on: { click: function () { cancelJob(j.job_id, function () { load(true); }); } } }));
            } else {
              append(actions, el("button", { type: "button", class: "danger-outline", text: "Delete",
                "aria-label": "Delete job " + shortId(j.job_id), dataset: { key: "delete-" + j.job_id },
                on: { click: function () { deleteJob(j.job_id, function () { load(true); }); } } }));
            }
            var cands = j.candidates || [];
            return el("tr", { dataset: { job: j.job_id } },
              cell("Job", el("a", { href: "#/job/" + encodeURIComponent(j.job_id), class: "mono", text: shortId(j.job_id),
                                    title: j.job_id, "aria-label": "Job " + j.job_id, dataset: { key: "open-" + j.job_id } })),
              cell("Status", [stateBadge(j.state), j.error ? el("span", { class: "row-error", text: j.error }) : null]),
              cell("Dataset", j.dataset),
              cell("Candidates", [el("span", { class: "count", text: cands.length + (cands.length === 1 ? " candidate" : " candidates") + ": " }),
                                  el("span", { class: "names", text: cands.join(", ") })]),
              cell("Created", fmtTime(j.created_at)),
              cell("Duration", dur),
              cell("Actions", actions));
          })));
        append(body, el("div", { class: "table-wrap" }, table));
      }
      var from = data.total ? page.offset + 1 : 0, to = page.offset + data.jobs.length;
      var newer = el("button", { type: "button", text: "Newer", disabled: page.offset === 0,
        on: { click: function () { page.offset = Math.max(0, page.offset - page.limit); load(true); } } });
      var older = el("button", { type: "button", text: "Older", disabled: to >= data.total,
        on: { click: function () { page.offset += page.limit; load(true); } } });
      append(body, el("div", { class: "pager" }, el("span", { text: from + "–" + to + " of " + data.total + " jobs" }), newer, older));
      if (focusedKey) {
        var again = body.querySelector('[data-key="' + focusedKey.replace(/[^A-Za-z0-9_-]/g, "") + '"]');
        if (again) again.focus();
      }
      live.textContent = data.total + " jobs";
    }

    load(true);
  }

  async function cancelJob(jobId, then) {
    if (!window.confirm("Cancel job " + jobId + "? A running job stops after its current epoch.")) return;
    try {
      await api("/jobs/cancel", { job_id: jobId });
      showBanner("Cancel requested for job " + shortId(jobId) + ".", "info");
    } catch (err) { handleError(err); }
    if (then) then();
  }

  async function deleteJob(jobId, then) {
    if (!window.confirm("Delete job " + jobId + " with its results and uploaded data? This cannot be undone.")) return;
    try {
      var r = await api("/jobs/delete", { job_id: jobId });
      showBanner("Deleted job " + shortId(jobId) + " (freed " + fmtBytes(r.freed_bytes) + ").", "info");
    } catch (err) { handleError(err); return; }
    if (then) then();
  }

  // -------------------------------------------------------------------------------------------- one job
  function renderJob(root, ctrl, jobId) {
    var title = heading("Job " + shortId(jobId));
    var badge = el("span", { class: "title-badge" });
    var facts = el("dl", { class: "facts" });
    var actions = el("div", { class: "actions job-actions" });
    var live = el("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    var progressBox = el("section", { class: "card", id: "progress", "aria-labelledby": "progress-title" });
    var resultBox = el("section", { id: "result", hidden: true });
    var lastState = null;
    var timer = null;

    append(root, el("div", { class: "job-head" }, title, badge));
    append(root, el("p", { class: "mono hint job-id", text: jobId }));
    append(root, facts, actions, live, progressBox, resultBox);
    append(root, el("p", null, el("a", { href: "#/jobs", text: "← All jobs" })));
    ctrl.signal.addEventListener("abort", function () { clearTimeout(timer); }, { once: true });

    async function poll() {
      var s;
      try {
        s = await api("/jobs/status", { job_id: jobId }, { signal: ctrl.signal });
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err.status === 404) {
          clear(progressBox);
          append(progressBox, el("p", { class: "field-error", text: err.message }),
                 el("p", null, el("a", { href: "#/jobs", text: "Back to the jobs list" })));
          return;
        }
        handleError(err);
        timer = setTimeout(poll, 5 * POLL_MS);
        return;
      }
      if (ctrl.signal.aborted) return;
      drawStatus(s);
      if (s.state !== lastState) {
        var first = lastState === null;
        lastState = s.state;
        drawActions(s);
        if (!first) live.textContent = "Job " + s.state + ".";
        if (s.state === "done") loadResult();
      }
      if (!isFinal(s.state)) timer = setTimeout(poll, POLL_MS);
    }

    function drawActions(s) {
      clear(actions);
      if (!isFinal(s.state)) {
        append(actions, el("button", { type: "button", class: "danger-outline", id: "cancel-job", text: "Cancel job",
          on: { click: function () { cancelJob(jobId, null); } } }));
      } else {
        append(actions, el("button", { type: "button", class: "danger-outline", id: "delete-job", text: "Delete job",
          on: { click: function () { deleteJob(jobId, function () { location.hash = "#/jobs"; }); } } }));
      }
    }

    function drawStatus(s) {
      var p = s.progress || {};
      var epochs = p.epochs || (s.config && s.config.epochs) || 0;
      clear(badge);
      append(badge, stateBadge(s.state, s.cancel_requested && !isFinal(s.state) ? s.state + ", cancel requested" : s.state));
      clear(facts);
      var duration = s.started_at ? fmtDuration((s.finished_at || (s.started_at + (p.elapsed_s || 0))) - s.started_at) : "—";
      [["Dataset", s.dataset],
       ["Candidates", String(p.candidates_total !== undefined ? p.candidates_total : (s.candidates || []).length)],
       ["Epochs", String(epochs)],
       ["Created", fmtTime(s.created_at)],
       ["Started", fmtTime(s.started_at)],
       ["Finished", fmtTime(s.finished_at)],
       ["Run time", duration]].forEach(function (kv) {
        append(facts, el("div", { class: "fact" }, el("dt", { text: kv[0] }), el("dd", { text: kv[1] })));
      });

      clear(progressBox);
      append(progressBox, el("h2", { id: "progress-title", text: "Progress" }));
      var fraction = typeof p.fraction === "number" ? p.fraction : 0;
      var summary = [];
      summary.push((p.candidates_done || 0) + " of " + (p.candidates_total || 0) + " candidates done");
      if (p.candidates_running) summary.push(p.candidates_running + " running");
      if (p.candidates_failed) summary.push(p.candidates_failed + " failed");
      if (p.candidates_pending) summary.push(p.candidates_pending + " waiting");
      if (p.elapsed_s !== null && p.elapsed_s !== undefined) summary.push("elapsed " + fmtDuration(p.elapsed_s));
      if (s.state === "running" && p.eta_s !== null && p.eta_s !== undefined) summary.push("about " + fmtDuration(p.eta_s) + " left");
      if (s.state === "queued") summary.push("waiting in the queue");
      append(progressBox, el("div", { class: "overall" },
        el("label", { for: "overall-progress", text: "Overall: " + Math.round(100 * fraction) + " %" }),
        el("progress", { id: "overall-progress", max: "1", value: String(fraction) }),
        el("p", { id: "progress-summary", class: "hint", text: summary.join(" · ") })));

      if (s.error) append(progressBox, el("p", { class: "job-error", role: "alert" },
        el("strong", { text: s.state === "failed" ? "The job failed: " : "Note: " }), s.error));
      if (s.state === "cancelled") append(progressBox, el("p", { class: "hint", text: "This job was cancelled; it has no ranking." }));

      // the server's clock at this status (for per-candidate ETAs without trusting the browser's clock)
      var serverNow = s.started_at && p.elapsed_s !== null && p.elapsed_s !== undefined && !s.finished_at
        ? s.started_at + p.elapsed_s : null;
      var rows = (s.candidates || []).map(function (c, i) {
        var e = typeof c.epoch === "number" ? Math.min(c.epoch, epochs || c.epoch) : 0;
        var done = c.state === "done" || c.state === "failed";
        var frac = done ? 1 : (epochs ? e / epochs : 0);
        var eta = "—";
        if (c.state === "running" && serverNow && c.started_at && e > 0 && epochs) {
          eta = fmtDuration((serverNow - c.started_at) / e * (epochs - e));
        } else if (done) eta = c.wall_time_s ? "took " + fmtDuration(c.wall_time_s) : "done";
        var pid = "cand-progress-" + i;
        var pred = c.predicted_accuracy !== null && c.predicted_accuracy !== undefined
          ? pct(c.predicted_accuracy) + " ± " + pct(c.predicted_std || 0) + " %" : "—";
        return el("tr", { class: "cand-" + c.state },
          cell("Candidate", el("span", { class: "cand-name", text: c.name })),
          cell("State", stateBadge(c.state)),
          cell("Epoch", el("div", { class: "epoch-cell" },
            el("label", { for: pid, class: "epoch-text", text: "epoch " + fmtEpoch(done && c.state === "done" ? epochs : e) + " of " + epochs }),
            el("progress", { id: pid, max: "1", value: String(frac) }))),
          cell("Time left", eta),
          cell("Predicted", pred),
          cell("Last acc.", c.observed_accuracy !== null && c.observed_accuracy !== undefined ? pct(c.observed_accuracy) + " %" : "—"),
          cell("Error", c.error ? el("span", { class: "row-error", text: c.error }) : "—"));
      });
      var table = el("div", { class: "table-wrap" }, el("table", { class: "data stack", id: "candidates-table" },
        el("caption", { class: "visually-hidden", text: "Progress per candidate" }),
        el("thead", null, el("tr", null, ["Candidate", "State", "Epoch", "Time left", "Predicted", "Last acc.", "Error"]
          .map(function (h) { return el("th", { scope: "col", text: h }); }))),
        el("tbody", null, rows)));
      // once the ranking is there, the per-candidate progress folds away (one click or Enter to open)
      if (s.state === "done") {
        append(progressBox, el("details", { class: "done-progress" },
          el("summary", { text: "Progress per candidate (" + rows.length + ")" }), table));
      } else append(progressBox, table);
    }

    async function loadResult() {
      var res;
      try {
        res = await api("/jobs/result", { job_id: jobId }, { signal: ctrl.signal });
      } catch (err) { handleError(err); return; }
      if (ctrl.signal.aborted) return;
      drawResult(res);
    }

    function drawResult(res) {
      var doc = res.ranking || {};
      var cfg = doc.config || {};
      var ranker = cfg.ranker || "beta_eff";
      var extra = SCORE_COLUMNS[ranker] || null;
      clear(resultBox);
      resultBox.hidden = false;
      var cands = doc.candidates || [];

      var headers = ["Rank", "Candidate"];
      if (extra) headers.push(extra);
      headers = headers.concat(["Predicted acc. (β_eff) %", "P(best)", "Last acc. %", "Params", "ms/img b1 / b64", "Status"]);
      var body = cands.map(function (r) {
        var pred = r.predicted_accuracy === null || r.predicted_accuracy === undefined ? "—"
          : pct(r.predicted_accuracy) + " ± " + pct(r.predicted_std || 0);
        var lat = r.latency_ms || {};
        var batches = Object.keys(lat).map(Number).sort(function (a, b) { return a - b; });
        var ms = batches.length ? batches.map(function (b) { return Number(lat[b]).toFixed(2); }).join(" / ") : "—";
        var status = String(r.status || "ok") + (r.reused ? " (reused)" : "");
        if (r.stopped_at_epoch != null) status += " (trained " + r.stopped_at_epoch + " epochs: " + r.stopped_reason + ")";
        if (r.prediction_method === "fallback_last") status += " (fallback: " + (r.prediction_flags || []).join("; ") + ")";
        if (r.status === "failed" && r.error) {  // as the CLI's table: long reasons in full below it
          var err = String(r.error).replace(/\n/g, " ");
          status += ": " + (err.length <= ERROR_WIDTH ? err : err.slice(0, ERROR_WIDTH - 1) + "… (see below)");
        }
        var cells = [
          cell("Rank", String(r.rank)),
          cell("Candidate", [el("span", { class: "cand-name", text: r.candidate }),
                             r.pareto ? el("span", { class: "pareto", title: "On the Pareto front", text: " ★" }) : null]),
        ];
        if (extra) {
          var sc = r.score === null || r.score === undefined ? "—"
            : ranker === "tse_ema" ? Number(r.score).toFixed(3)
            : pct(r.score) + (r.score_std !== null && r.score_std !== undefined ? " ± " + pct(r.score_std) : "");
          cells.push(cell(extra, sc));
        }
        cells.push(cell(headers[cells.length], pred));
        cells.push(cell("P(best)", r.p_best === null || r.p_best === undefined ? "—" : Number(r.p_best).toFixed(2)));
        cells.push(cell("Last acc. %", pct(r.observed_accuracy)));
        cells.push(cell("Params", fmtParams(r.n_params)));
        cells.push(cell("ms/img b1 / b64", ms));
        cells.push(cell("Status", el("span", { class: r.status === "failed" ? "row-error" : null, text: status })));
        return el("tr", { class: r.status === "failed" ? "failed" : null }, cells);
      });

      var winner = cands.filter(function (r) { return r.status === "ok"; })[0];
      var ds = doc.dataset || {};
      var classes = ds.classes || [];
      var shownClasses = classes.slice(0, 30);

      append(resultBox,
        el("section", { class: "card", "aria-labelledby": "ranking-title" },
          el("h2", { id: "ranking-title", text: "Ranking" }),
          winner ? el("p", { class: "winner" }, "Ranked first: ", el("strong", { class: "cand-name", text: winner.candidate }),
            winnerScore(winner, ranker))
            : el("p", { class: "job-error", text: "No candidate finished; there is no winner." }),
          el("div", { class: "table-wrap" }, el("table", { class: "data stack", id: "ranking-table" },
            el("caption", { class: "visually-hidden", text: "Ranking, best first" }),
            el("thead", null, el("tr", null, headers.map(function (h) { return el("th", { scope: "col", text: h }); }))),
            el("tbody", null, body))),
          cands.some(function (r) { return r.pareto; })
            ? el("p", { class: "hint", text: "★ on the Pareto front of the ranking score against batch-1 latency." }) : null,
          el("p", { class: "hint", text: "Ranked by " + ranker + (doc.device ? " on " + doc.device : "") +
            (doc.wall_time_s ? " in " + fmtDuration(doc.wall_time_s) : "") + "." }),
          el("div", { class: "actions" },
            el("button", { type: "button", id: "download-ranking", class: "primary", text: "Download ranking.json",
                           on: { click: function () { download(doc); } } }),
            cands.some(function (r) { return r.checkpoint; })
              ? el("button", { type: "button", id: "download-artifacts", text: "Download the winner's model (zip)",
                               on: { click: function () { downloadArtifacts(); } } }) : null),
          el("p", { class: "note", id: "weights-note",
                    text: cands.some(function (r) { return r.checkpoint; })
                      ? "The zip holds ranking.json, the plots and the winner's fine-tuned model " +
                        "(checkpoints/*.safetensors; the README's \"Use the winner\" loads it with timm)."
                      : "No fine-tuned model was kept for this job." })));

      var failed = cands.filter(function (r) { return r.status === "failed"; });
      if (failed.length) {
        append(resultBox, el("section", { class: "card", "aria-labelledby": "failed-title", id: "failed" },
          el("h2", { id: "failed-title", text: "Failed candidates" }),
          el("ul", { class: "failed-list" }, failed.map(function (r) {
            return el("li", null, el("span", { class: "cand-name", text: r.candidate }), ": ",
                      el("span", { class: "row-error", text: r.error || "failed (no reason given)" }));
          }))));
      }
      if ((doc.warnings || []).length) {
        append(resultBox, el("section", { class: "card", "aria-labelledby": "warnings-title" },
          el("h2", { id: "warnings-title", text: "Warnings" }),
          el("ul", null, doc.warnings.map(function (w) { return el("li", { text: w }); }))));
      }

      var plots = res.plots || [];
      var plotBox = el("div", { class: "plots" });
      append(resultBox, el("section", { class: "card", "aria-labelledby": "plots-title", id: "plots" },
        el("h2", { id: "plots-title", text: "Plots" }),
        plots.length ? plotBox : el("p", { class: "hint", text: "This job has no plots." })));
      plots.forEach(function (name) { append(plotBox, plotFigure(name)); });

      append(resultBox, el("section", { class: "card", "aria-labelledby": "dataset-title", id: "dataset-info" },
        el("h2", { id: "dataset-title", text: "Dataset" }),
        el("dl", { class: "facts" },
          [["Source", ds.source], ["Images", ds.n_images], ["Training / validation", (ds.n_train || 0) + " / " + (ds.n_val || 0)],
           ["Classes", classes.length]].map(function (kv) {
            return el("div", { class: "fact" }, el("dt", { text: kv[0] }), el("dd", { text: kv[1] === undefined ? "—" : String(kv[1]) }));
          })),
        classes.length ? el("ul", { class: "classes", id: "class-list", "aria-label": "Class names" },
          shownClasses.map(function (c) { return el("li", { text: c }); }),
          classes.length > shownClasses.length ? el("li", { class: "hint", text: "… and " + (classes.length - shownClasses.length) + " more" }) : null) : null));
    }

    /** " (what rank 1 was ranked by)" for the sentence above the table. */
    function winnerScore(r, ranker) {
      var has = function (x) { return x !== null && x !== undefined; };
      if (ranker === "beta_eff" || !SCORE_COLUMNS[ranker]) {
        return has(r.predicted_accuracy)
          ? " (predicted final accuracy " + pct(r.predicted_accuracy) + " ± " + pct(r.predicted_std || 0) + " %)" : "";
      }
      if (!has(r.score)) return "";
      if (ranker === "tse_ema") return " (−TSE-EMA " + Number(r.score).toFixed(3) + ")";
      return " (last validation accuracy " + pct(r.score) + (has(r.score_std) ? " ± " + pct(r.score_std) : "") + " %)";
    }

    function plotFigure(name) {
      var caption = PLOT_TITLES[name] || name;
      var fig = el("figure", { class: "plot" });
      var holder = el("div", { class: "plot-holder", text: "Loading " + name + "…" });
      append(fig, holder, el("figcaption", { text: caption }));
      api("/jobs/plot", { job_id: jobId, name: name }, { as: "blob", signal: ctrl.signal }).then(function (blob) {
        if (ctrl.signal.aborted) return;
        var url = URL.createObjectURL(blob);
        state.urls.push(url);
        var img = el("img", { src: url, alt: caption, "data-plot": name });
        clear(holder);
        append(holder, img);
      }).catch(function (err) {
        if (err.name === "AbortError") return;
        holder.textContent = "Could not load " + name + ": " + describe(err);
      });
      return fig;
    }

    async function downloadArtifacts() {
      var blob = await api("/jobs/artifacts", { job_id: jobId }, { as: "blob" });
      var url = URL.createObjectURL(blob);
      var a = el("a", { href: url, download: "ncap-" + jobId + ".zip", class: "visually-hidden", text: "zip" });
      document.body.appendChild(a);
      a.click();
      document.body.removeChild(a);
      setTimeout(function () { URL.revokeObjectURL(url); }, 30000);
    }

    function download(doc) {
      var blob = new Blob([JSON.stringify(doc, null, 2) + "\n"], { type: "application/json" });
      var url = URL.createObjectURL(blob);
      var a = el("a", { href: url, download: "ranking.json", class: "visually-hidden", text: "ranking.json" });
      document.body.appendChild(a);
      a.click();
      document.body.removeChild(a);
      setTimeout(function () { URL.revokeObjectURL(url); }, 30000);
    }

    poll();
  }

  // ---------------------------------------------------------------------------------------------- start
  function start() {
    $("sign-out").addEventListener("click", function () {
      signOut(null);
    });
    window.addEventListener("hashchange", render);
    window.addEventListener("online", hideConnectionLost);
    render();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
