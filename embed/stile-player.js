// Stile embed kit: plays a Stile link in a <video> element and tells the viewer, in
// words, why a link stopped working. A dependency-free ES module (no build step).
//
//   import { StilePlayer } from './stile-player.js';
//   const player = new StilePlayer(document.querySelector('video'), {
//     source: async () => (await fetch('/api/video-link')).json(), // or a link string
//   });
//   player.load();
//
// - HLS plays with hls.js when the page provides it (window.Hls or options.Hls), else
//   natively where the browser can (Safari); DASH plays with dash.js (window.dashjs or
//   options.dashjs). The kit loads neither library itself.
// - Cookie mode: `withCredentials: true` makes every request carry cookies (the edge
//   must allow the page's origin with credentials: cors.allow_credentials).
// - The forward buffer is capped (`bufferSeconds`, default 30): players keep asking
//   for a segment every segment duration, so a revocation reaches the viewer within
//   about one segment (hls.js alone would fetch up to 10 minutes of a low-bit-rate
//   stream ahead and play it to the end after a revocation).
// - On 401/403 the kit stops the player at once (no retries against a refused link),
//   reads the reason from the edge's `x-stile-reason` header (exposed through CORS)
//   and shows it: "This link has expired — ask for a new one.", "This link was
//   revoked.", ... When `source` is a function and the link expired, it first asks
//   for a fresh link once and resumes where playback stopped (the page's URL stays the
//   same while the credentials under it rotate).
// - Player beacons (`beacon`, default true): the kit posts what only the player sees
//   — startup time (load to first frame), stalls after playback started and their
//   time, a fatal error kind — to the edge's `_stile_beacon` URL beside the media it
//   plays, with the same credential (docs/edge.md "Player beacons"). Sent once after
//   startup, on a fatal error, and when the page is hidden or left (sendBeacon).
// - Tokens never reach error reporting: `onError` gets a plain object whose URLs and
//   messages are redacted (query parameter and path-prefix tokens), never the
//   libraries' own event objects (which carry full URLs); hls.js and dash.js logging
//   is turned off.
//
// docs/player.md is the guide.

/** Reason codes (x-stile-reason) and what a viewer is told. */
export const MESSAGES = {
  missing: 'This video needs an access link, and none reached the video server.',
  malformed: 'This link is not valid. Check that it was copied completely, or ask for a new one.',
  unknown_key: 'This link is not valid (it was signed with a key the video server does not know). Ask for a new one.',
  bad_signature: 'This link is not valid. Check that it was copied completely, or ask for a new one.',
  expired: 'This link has expired — ask for a new one.',
  not_yet_valid: 'This link is not valid yet. Try again later.',
  scope: 'This link is not valid for this video.',
  ip: 'This link belongs to another network connection. Ask for a new one.',
  geo: 'This video is not available in your country.',
  revoked: 'This link was revoked.',
  stale_state: 'The video service cannot check links right now. Try again in a moment.',
  refused: 'The video server refused this link.',
  unplayable: 'This video cannot be played in this browser.',
  network: 'The video could not be loaded. Check the connection and try again.',
  source: 'There is no link to play.',
};

/** Replaces tokens in `text` (query parameter `param`, path prefix `/segment/`) by REDACTED. */
export function redact(text, { tokenParam = 'st', pathSegment = '_st' } = {}) {
  if (typeof text !== 'string') return text;
  const p = escapeRegExp(tokenParam);
  const s = escapeRegExp(pathSegment);
  return text
    .replace(new RegExp(`([?&;](?:${p}|${p.toUpperCase()})=)[^&#\\s"'<>]*`, 'g'), '$1REDACTED')
    .replace(new RegExp(`(/${s}/)[^/?#\\s"'<>]+`, 'gi'), '$1REDACTED');
}

/** The viewer's message for a reason code (or an HTTP status when there is none). */
export function reasonMessage(reason, status) {
  if (reason && MESSAGES[reason]) return MESSAGES[reason];
  if (status === 401) return MESSAGES.missing;
  if (status === 403) return MESSAGES.refused;
  return MESSAGES.network;
}

const REASON_HEADER = 'x-stile-reason';

/** The last path segment of the edge's beacon URL (docs/edge.md "Player beacons"). */
export const BEACON_SEGMENT = '_stile_beacon';

/**
 * The beacon URL for a media or manifest URL: `_stile_beacon` in the same directory,
 * with the same credential (a path-prefix credential stays in the path; a query one,
 * `tokenParam`, is copied; cookie mode carries none). `null` for a URL it cannot read.
 */
export function beaconUrl(mediaUrl, { tokenParam = 'st' } = {}) {
  try {
    const base = new URL(mediaUrl, globalThis.location ? globalThis.location.href : undefined);
    const url = new URL(BEACON_SEGMENT, base);
    const token = base.searchParams.get(tokenParam);
    if (token) url.searchParams.set(tokenParam, token);
    return url.toString();
  } catch (_) {
    return null;
  }
}

export class StilePlayer {
  #listener;
  #pageListener;

  /**
   * @param {HTMLVideoElement} video
   * @param {object} options
   * @param {string|function(): Promise<string|{url: string, format?: string, withCredentials?: boolean, with_credentials?: boolean}>} options.source
   *   a link, or a function returning a fresh one (from the page's backend)
   * @param {'hls'|'dash'} [options.format] default: from the URL (`.mpd` is DASH)
   * @param {boolean} [options.withCredentials] cookie mode (default false)
   * @param {boolean} [options.autoplay] default true
   * @param {boolean} [options.refreshOnExpiry] ask `source` again once when the link expires (default true)
   * @param {number} [options.bufferSeconds] forward buffer cap, seconds (default 30)
   * @param {boolean} [options.beacon] post startup, rebuffering and fatal errors to the edge (default true)
   * @param {string} [options.tokenParam] default 'st' (for redaction)
   * @param {string} [options.pathSegment] default '_st' (for redaction)
   * @param {HTMLElement|null} [options.messageElement] where to show messages (default: a box after the video; null: none)
   * @param {object} [options.messages] replaces entries of MESSAGES
   * @param {function(object)} [options.onStatus] every state change: {state, reason?, status?, message?}
   * @param {function(object)} [options.onError] redacted error reports, safe to send to error tracking
   * @param {object} [options.Hls] hls.js (default window.Hls)
   * @param {object} [options.dashjs] dash.js (default window.dashjs)
   */
  constructor(video, options = {}) {
    this.video = video;
    this.options = { autoplay: true, refreshOnExpiry: true, bufferSeconds: 30, beacon: true, tokenParam: 'st', pathSegment: '_st', ...options };
    this.messages = { ...MESSAGES, ...(options.messages || {}) };
    this.status = { state: 'idle' };
    this.engine = null;
    this.hls = null;
    this.dash = null;
    this.link = null;
    this.denied = false;
    this.refreshed = false;
    this.resumeAt = 0;
    this.recoveredMedia = false;
    this.hidControls = false;
    this.messageElement = options.messageElement === undefined ? this.#defaultMessageElement() : options.messageElement;
    this.#listener = (ev) => this.#onVideo(ev);
    for (const ev of ['playing', 'waiting', 'ended', 'error']) video.addEventListener(ev, this.#listener);
    this.mediaUrl = null;
    this.beacon = newBeacon();
    this.#pageListener = (ev) => {
      if (ev.type === 'pagehide' || (typeof document !== 'undefined' && document.visibilityState === 'hidden')) this.#sendBeacon();
    };
    if (this.options.beacon && typeof addEventListener === 'function') {
      addEventListener('pagehide', this.#pageListener);
      if (typeof document !== 'undefined') document.addEventListener('visibilitychange', this.#pageListener);
    }
  }

  /** Resolves the source and starts playing. */
  async load() {
    this.denied = false;
    // A refresh after expiry continues the same playback (its startup already counted).
    if (!this.refreshed) {
      this.#sendBeacon();
      this.beacon = newBeacon();
    }
    this.mediaUrl = null;
    if (this.hidControls) {
      this.hidControls = false;
      this.video.controls = true;
    }
    this.#setStatus({ state: 'loading' });
    let link;
    try {
      link = await this.#resolve();
    } catch (e) {
      this.#fail('source', String(e && e.message ? e.message : e));
      return;
    }
    this.link = link;
    if (link.format === 'dash') this.#playDash(link);
    else this.#playHls(link);
  }

  /** Stops playback and releases the player library. */
  destroy() {
    this.#sendBeacon();
    this.#teardown();
    for (const ev of ['playing', 'waiting', 'ended', 'error']) this.video.removeEventListener(ev, this.#listener);
    if (typeof removeEventListener === 'function') removeEventListener('pagehide', this.#pageListener);
    if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', this.#pageListener);
  }

  // ----------------------------------------------------------------- sources

  async #resolve() {
    const src = this.options.source;
    let got = typeof src === 'function' ? await src() : src;
    if (typeof got === 'string') got = { url: got };
    if (!got || typeof got.url !== 'string' || !got.url) throw new Error('the source gave no link');
    const format = got.format || this.options.format || (/\.mpd(?:[?#]|$)/i.test(got.url) ? 'dash' : 'hls');
    const withCredentials = Boolean(got.withCredentials ?? got.with_credentials ?? this.options.withCredentials);
    return { url: got.url, format, withCredentials };
  }

  // --------------------------------------------------------------------- HLS

  #playHls(link) {
    const Hls = this.options.Hls || globalThis.Hls;
    if (Hls && Hls.isSupported && Hls.isSupported()) {
      this.engine = 'hls.js';
      // No retry of a refused request; anything else keeps hls.js's own policy.
      const refuse401403 = (_cfg, _n, _timeout, response, retry) =>
        response && (response.code === 401 || response.code === 403) ? false : retry;
      const policy = (name) => {
        const base = Hls.DefaultConfig && Hls.DefaultConfig[name] && Hls.DefaultConfig[name].default;
        if (!base) return undefined;
        return { default: { ...base, errorRetry: base.errorRetry && { ...base.errorRetry, shouldRetry: refuse401403 } } };
      };
      const config = {
        debug: false,
        xhrSetup: (xhr) => {
          xhr.withCredentials = link.withCredentials;
        },
        fetchSetup: (context, init) => new Request(context.url, { ...init, credentials: link.withCredentials ? 'include' : 'same-origin' }),
        startPosition: this.resumeAt > 0 ? this.resumeAt : -1,
        maxBufferLength: this.options.bufferSeconds,
        maxMaxBufferLength: this.options.bufferSeconds,
      };
      for (const name of ['manifestLoadPolicy', 'playlistLoadPolicy', 'fragLoadPolicy', 'keyLoadPolicy']) {
        const p = policy(name);
        if (p) config[name] = p;
      }
      const hls = new Hls(config);
      this.hls = hls;
      hls.on(Hls.Events.ERROR, (_event, data) => this.#onHlsError(hls, data));
      hls.on(Hls.Events.MANIFEST_PARSED, () => this.#autoplay());
      // The latest media URL carries the session credential the edge issued (beacons reuse it).
      hls.on(Hls.Events.FRAG_LOADED, (_event, data) => {
        if (hls === this.hls && data && data.frag && data.frag.url) this.mediaUrl = data.frag.url;
      });
      hls.loadSource(link.url);
      hls.attachMedia(this.video);
      return;
    }
    if (this.video.canPlayType('application/vnd.apple.mpegurl')) {
      // Safari: the browser fetches everything itself (cookies go along on same-site requests).
      this.engine = 'native';
      this.video.src = link.url;
      if (this.resumeAt > 0) {
        this.video.addEventListener('loadedmetadata', () => { this.video.currentTime = this.resumeAt; }, { once: true });
      }
      this.#autoplay();
      return;
    }
    this.#fail('unplayable', 'HLS needs hls.js on this browser (window.Hls)');
  }

  #onHlsError(hls, data) {
    if (this.denied || hls !== this.hls) return;
    const status = data.response && typeof data.response.code === 'number' ? data.response.code : undefined;
    const xhr = data.networkDetails;
    const reason = status === 401 || status === 403 ? headerOf(xhr) : undefined;
    const url = (data.frag && data.frag.url) || (data.context && data.context.url) || data.url;
    this.#report({ engine: 'hls.js', type: data.type, details: data.details, fatal: Boolean(data.fatal), status, reason, url });
    if (status === 401 || status === 403) {
      this.#deny(status, reason);
      return;
    }
    if (!data.fatal) return;
    if (data.type === 'mediaError' && !this.recoveredMedia) {
      this.recoveredMedia = true;
      hls.recoverMediaError();
      return;
    }
    this.#fail(data.type === 'networkError' ? 'network' : 'unplayable', data.details);
  }

  // -------------------------------------------------------------------- DASH

  #playDash(link) {
    const dashjs = this.options.dashjs || globalThis.dashjs;
    if (!dashjs || !dashjs.MediaPlayer) {
      this.#fail('unplayable', 'DASH needs dash.js (window.dashjs)');
      return;
    }
    this.engine = 'dash.js';
    const player = dashjs.MediaPlayer().create();
    this.dash = player;
    const none = dashjs.Debug && dashjs.Debug.LOG_LEVEL_NONE !== undefined ? dashjs.Debug.LOG_LEVEL_NONE : 0;
    const ahead = this.options.bufferSeconds;
    player.updateSettings({
      debug: { logLevel: none },
      streaming: {
        buffer: { bufferTimeAtTopQuality: ahead, bufferTimeAtTopQualityLongForm: ahead, bufferTimeDefault: Math.min(18, ahead) },
      },
    });
    if (link.withCredentials) player.setXHRWithCredentialsForType(undefined, true);
    // Every response passes here first, refused ones included: stop before dash.js retries.
    player.addResponseInterceptor((response) => {
      const status = response && response.status;
      if (status >= 200 && status < 300 && player === this.dash) this.mediaUrl = response.url || (response.request && response.request.url) || this.mediaUrl;
      if ((status === 401 || status === 403) && player === this.dash && !this.denied) {
        const reason = headerOf(response.headers);
        this.#report({ engine: 'dash.js', type: 'download', details: 'refused', fatal: true, status, reason, url: response.url || (response.request && response.request.url) });
        setTimeout(() => this.#deny(status, reason), 0);
      }
      return Promise.resolve(response);
    });
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      if (this.denied || player !== this.dash) return;
      const err = (e && e.error) || {};
      const status = err.data && err.data.response && err.data.response.status;
      this.#report({ engine: 'dash.js', type: 'error', details: String(err.code ?? ''), fatal: true, status, message: err.message });
      this.#fail(status ? 'network' : 'unplayable', `dash.js error ${err.code ?? ''}`);
    });
    player.initialize(this.video, link.url, Boolean(this.options.autoplay), this.resumeAt > 0 ? this.resumeAt : NaN);
  }

  // ------------------------------------------------------------ what happens

  async #deny(status, reason) {
    if (this.denied) return;
    this.denied = true;
    const at = this.video.currentTime || 0;
    this.#teardown();
    if (reason === 'expired' && typeof this.options.source === 'function' && this.options.refreshOnExpiry && !this.refreshed) {
      // A stable embed: ask the backend for a fresh link once and resume.
      this.refreshed = true;
      this.resumeAt = at;
      this.#setStatus({ state: 'refreshing', reason, status });
      await this.load();
      return;
    }
    this.#setStatus({ state: 'stopped', reason: reason || null, status, message: this.#message(reason, status) });
    // The edge counts its own refusals; a beacon still goes out in case the credential
    // it carries is accepted (a refusal of another URL, a link since renewed).
    this.beacon.error = reason || (status === 401 ? 'missing' : 'refused');
    this.#sendBeacon();
  }

  async #onVideo(ev) {
    if (this.denied) return;
    if (ev.type === 'playing') {
      this.refreshed = false;
      const b = this.beacon;
      const at = now();
      if (b.waitingSince !== null) {
        b.rebufferMs += at - b.waitingSince;
        b.waitingSince = null;
      }
      this.#setStatus({ state: 'playing' });
      if (b.startupMs === null && !b.startupSent) {
        b.startupMs = at - b.loadAt;
        this.#sendBeacon();
      }
    } else if (ev.type === 'waiting') {
      const b = this.beacon;
      // A stall after playback started (seeking included); the startup wait is not one.
      if ((b.startupSent || b.startupMs !== null) && b.waitingSince === null) {
        b.rebuffers += 1;
        b.waitingSince = now();
      }
      this.#setStatus({ state: 'buffering' });
    } else if (ev.type === 'ended') {
      this.#setStatus({ state: 'ended' });
    } else if (ev.type === 'error' && this.engine === 'native') {
      // Native HLS hides HTTP statuses: ask the edge about the link once.
      const probe = await this.#probe();
      if (probe.status === 401 || probe.status === 403) this.#deny(probe.status, probe.reason);
      else this.#fail('unplayable', `media error ${this.video.error ? this.video.error.code : ''}`);
    }
  }

  async #probe() {
    try {
      const r = await fetch(this.link.url, { cache: 'no-store', credentials: this.link.withCredentials ? 'include' : 'same-origin' });
      return { status: r.status, reason: r.headers.get(REASON_HEADER) || undefined };
    } catch (_) {
      return {};
    }
  }

  #fail(kind, details) {
    if (this.denied) return;
    this.denied = true;
    this.#teardown();
    this.#report({ engine: this.engine, type: kind, details, fatal: true });
    this.#setStatus({ state: 'error', reason: null, message: this.messages[kind] || this.messages.network });
    this.beacon.error = kind;
    this.#sendBeacon();
  }

  /**
   * Posts what happened since the last beacon (nothing when nothing did). Best effort
   * and silent: no error, URL or token of it reaches onError or the console.
   */
  #sendBeacon() {
    if (!this.options.beacon || !this.link) return;
    const b = this.beacon;
    if (b.waitingSince !== null) {
      const at = now();
      b.rebufferMs += at - b.waitingSince;
      b.waitingSince = at;
    }
    const body = {};
    if (b.startupMs !== null && !b.startupSent) body.startup_ms = Math.round(b.startupMs);
    if (b.rebuffers > 0) body.rebuffers = b.rebuffers;
    if (b.rebufferMs >= 1) body.rebuffer_ms = Math.round(b.rebufferMs);
    if (b.error) body.error = b.error;
    if (Object.keys(body).length === 0) return;
    const url = beaconUrl(this.mediaUrl || this.link.url, { tokenParam: this.options.tokenParam });
    if (!url) return;
    if (body.startup_ms !== undefined) b.startupSent = true;
    b.rebuffers = 0;
    b.rebufferMs = 0;
    b.error = null;
    const text = JSON.stringify(body);
    try {
      // sendBeacon posts text/plain (no preflight) and survives the page going away.
      if (typeof navigator !== 'undefined' && navigator.sendBeacon && navigator.sendBeacon(url, text)) return;
      const credentials = this.link.withCredentials ? 'include' : 'same-origin';
      fetch(url, { method: 'POST', body: text, keepalive: true, credentials, cache: 'no-store' }).catch(() => {});
    } catch (_) {
      // Beacons are best effort.
    }
  }

  #teardown() {
    if (this.hls) {
      const hls = this.hls;
      this.hls = null;
      hls.destroy();
    }
    if (this.dash) {
      const dash = this.dash;
      this.dash = null;
      dash.reset();
    }
    // An empty element without controls: no spinner beside the message (load() restores them).
    this.video.pause();
    this.video.removeAttribute('src');
    this.video.load();
    if (this.video.controls) {
      this.hidControls = true;
      this.video.controls = false;
    }
  }

  #autoplay() {
    if (!this.options.autoplay) return;
    const p = this.video.play();
    if (p && p.catch) {
      p.catch(() => {
        if (!this.denied) this.#setStatus({ state: 'paused', message: 'Press play to start.' });
      });
    }
  }

  #message(reason, status) {
    if (reason && this.messages[reason]) return this.messages[reason];
    return reasonMessage(reason, status);
  }

  #report(info) {
    if (!this.options.onError) return;
    const opts = { tokenParam: this.options.tokenParam, pathSegment: this.options.pathSegment };
    const safe = {};
    for (const [k, v] of Object.entries(info)) {
      if (v === undefined) continue;
      safe[k] = typeof v === 'string' ? redact(v, opts) : v;
    }
    try {
      this.options.onError(safe);
    } catch (_) {
      // A broken reporter must not break playback.
    }
  }

  #setStatus(status) {
    this.status = status;
    this.video.dataset.stileState = status.state;
    if (status.reason) this.video.dataset.stileReason = status.reason;
    else delete this.video.dataset.stileReason;
    if (this.messageElement) {
      this.messageElement.textContent = status.message || '';
      this.messageElement.hidden = !status.message;
    }
    if (this.options.onStatus) this.options.onStatus({ ...status });
  }

  #defaultMessageElement() {
    if (!this.video.parentNode || typeof document === 'undefined') return null;
    const el = document.createElement('div');
    el.className = 'stile-message';
    el.setAttribute('role', 'alert');
    el.hidden = true;
    el.style.cssText = 'margin:.5em 0;padding:.75em 1em;background:#222;color:#fff;font:16px/1.4 system-ui,sans-serif;border-radius:4px';
    this.video.insertAdjacentElement('afterend', el);
    return el;
  }
}

/** A playback's beacon counters (since the last beacon sent). */
function newBeacon() {
  return { loadAt: now(), startupMs: null, startupSent: false, rebuffers: 0, rebufferMs: 0, waitingSince: null, error: null };
}

function now() {
  return globalThis.performance && typeof performance.now === 'function' ? performance.now() : Date.now();
}

/** The reason header from an XMLHttpRequest or a header object (dash.js). */
function headerOf(source) {
  if (!source) return undefined;
  try {
    if (typeof source.getResponseHeader === 'function') return source.getResponseHeader(REASON_HEADER) || undefined;
    if (typeof source.get === 'function') return source.get(REASON_HEADER) || undefined;
    for (const [k, v] of Object.entries(source)) {
      if (k.toLowerCase() === REASON_HEADER) return String(v).trim() || undefined;
    }
  } catch (_) {
    // Headers not exposed (CORS without Access-Control-Expose-Headers).
  }
  return undefined;
}

function escapeRegExp(s) {
  return String(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
