// One browser scenario against a running `stile dev`: headless Chromium (Debian's,
// driven by playwright-core), the embed kit's example page with hls.js or dash.js from
// node_modules. Prints one JSON line with what happened; crates/cli/tests/browser.rs
// starts `stile dev`, runs this and asserts on the JSON (it saves a screenshot per
// scenario under target/browser-artefacts/).
//
// Usage: node tests/browser/run.mjs '<json>' with
//   scenario    play | revoke | forged
//   page        the player page (http://127.0.0.1:N+4/ or http://localhost:N+4/)
//   format      hls | dash
//   transport   query | path | cookie
//   screenshot  PNG path
//   stile, server, operator   for `revoke`: the binary, control plane URL, operator key
//   chromium    default /usr/bin/chromium
//   play_secs   how far playback must get (default 5); `to_end`: until the video ends
//   ttl         ask the sample backend for links of this many seconds
//   buffer      the embed kit's forward buffer cap, seconds (the page's `buffer`)
//   rate        playback rate once playing (default 1)
//   by          for `revoke`: token (default), subject (the page backend's
//               `web-viewer`) or key (rotate, then revoke the link's key 1)
//   revoke_after for `revoke`: seconds of playback before the revocation (default 3)
//   src         for `play`: the URL the page plays (its `?src=`) instead of a link
//               from its backend
//   then_revoke for `play`: after playing, revoke the link and fetch the last
//               segment the player fetched again, with its credential (reported:
//               status and x-stile-reason)
//   edge_cert   the edge's certificate (PEM, leaf first) for `stile dev --tls`:
//               Chromium trusts that certificate's public key and nothing else
//               beyond its own store (--ignore-certificate-errors-spki-list), as
//               the throwaway CA is not in it
//   ca_file     for `stile` commands against a control plane serving gRPC over TLS
//
// Every media segment response's HTTP version and TLS version, as Chromium's
// network stack saw them (DevTools protocol), are reported as `segment_protocols`.

import { execFile } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const args = JSON.parse(process.argv[2]);
const playSecs = args.play_secs ?? 5;
const out = { scenario: args.scenario, format: args.format, transport: args.transport };
const browserLog = [];

function pageUrl(extra = {}) {
  const u = new URL(args.page);
  u.searchParams.set('format', args.format);
  u.searchParams.set('transport', args.transport);
  if (args.ttl) u.searchParams.set('ttl', String(args.ttl));
  if (args.buffer) u.searchParams.set('buffer', String(args.buffer));
  if (args.src) u.searchParams.set('src', args.src);
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
  return u.toString();
}

async function snapshot(page) {
  return page.evaluate(() => {
    const v = document.querySelector('video');
    const msg = document.querySelector('.stile-message');
    return {
      currentTime: v.currentTime,
      state: v.dataset.stileState || null,
      reason: v.dataset.stileReason || null,
      message: msg && !msg.hidden ? msg.textContent : null,
      videoWidth: v.videoWidth,
      engine: window.stilePlayer ? window.stilePlayer.engine : null,
      errors: window.stileErrors || [],
      link: window.stileLink || null,
      mediaError: v.error ? v.error.code : null,
      ended: v.ended,
      duration: Number.isFinite(v.duration) ? v.duration : null,
    };
  });
}

/** Distinct colours in the frame on screen (drawn to a 64x36 canvas): a test pattern has many, black or a spinner few. */
async function pictureColours(page) {
  return page.evaluate(() => {
    const v = document.querySelector('video');
    if (!v.videoWidth) return 0;
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 36;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 36);
    const d = g.getImageData(0, 0, 64, 36).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) seen.add((d[i] >> 4) << 8 | (d[i + 1] >> 4) << 4 | (d[i + 2] >> 4));
    return seen.size;
  });
}

/** Polls `snapshot` until `done(s)` or `secs` pass; returns the last snapshot and the time taken. */
async function until(page, secs, done) {
  const start = Date.now();
  let s = await snapshot(page);
  while (!done(s) && Date.now() - start < secs * 1000) {
    await page.waitForTimeout(100);
    s = await snapshot(page);
  }
  return { s, ms: Date.now() - start };
}

/** Sets the playback rate (`args.rate`) on the video element. */
async function setRate(page) {
  if (args.rate) await page.evaluate((r) => { document.querySelector('video').playbackRate = r; }, args.rate);
}

/** The last media segment URL the page fetched (from the resource timing entries), with its credential. */
async function lastSegment(page) {
  return page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name)
    .filter((u) => /\/seg-[^/]*\.m4s$/.test(new URL(u).pathname))
    .at(-1) || null);
}

/** The Cookie header the browser context would send to `url`. */
async function cookieHeader(context, url) {
  return (await context.cookies(url)).map((c) => `${c.name}=${c.value}`).join('; ');
}

const tlsArgs = args.ca_file ? ['--ca-file', args.ca_file] : [];
const stile = (cli) => promisify(execFile)(args.stile, [...cli, '--server', args.server, '--api-key', args.operator, ...tlsArgs]);

/** Chromium's flag that trusts the edge certificate's public key (base64 SHA-256 of its SPKI). */
function pinnedEdge() {
  if (!args.edge_cert) return [];
  const cert = new X509Certificate(readFileSync(args.edge_cert));
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return [`--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`];
}

const fatal = (s) => s.state === 'error' || s.state === 'stopped' || s.errors.some((e) => e.fatal);

const browser = await chromium.launch({
  executablePath: args.chromium || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    ...pinnedEdge(),
  ],
});
try {
  // A fresh context per scenario: its own cookies.
  const context = await browser.newContext({ viewport: { width: 720, height: 640 } });
  const page = await context.newPage();
  // Room for every request of a whole film in the resource timing entries (default 250).
  await page.addInitScript(() => performance.setResourceTimingBufferSize(10000));
  page.on('console', (m) => browserLog.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => browserLog.push(`pageerror: ${e.message}`));
  // The HTTP and TLS versions of every media segment response.
  const segmentProtocols = new Set();
  out.segment_protocols = [];
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.responseReceived', ({ response: r }) => {
    if (!/\/seg-[^/]*\.m4s$/.test(new URL(r.url).pathname)) return;
    const entry = `${r.protocol} ${r.securityDetails ? r.securityDetails.protocol : 'no TLS'}`;
    if (!segmentProtocols.has(entry)) out.segment_protocols.push(entry);
    segmentProtocols.add(entry);
  });
  await cdp.send('Network.enable');
  page.on('requestfailed', (r) => browserLog.push(`requestfailed: ${r.url().replace(/st=[^&]*/, 'st=…')} ${r.failure()?.errorText}`));

  if (args.scenario === 'play') {
    await page.goto(pageUrl(), { waitUntil: 'load' });
    const { s: first } = await until(page, 40, (s) => s.state === 'playing' || fatal(s));
    out.first_link = first.link;
    await setRate(page);
    const reached = args.play_secs === 'to_end' ? (s) => s.ended : (s) => s.currentTime >= playSecs;
    const budget = args.play_secs === 'to_end' ? 300 : 40 + playSecs;
    const { s, ms } = await until(page, budget, (s) => reached(s) || fatal(s));
    out.played = s;
    out.played_ms = ms;
    out.picture_colours = await pictureColours(page);
    if (args.then_revoke && first.link) {
      const segment = await lastSegment(page);
      out.last_segment = segment ? new URL(segment).pathname : null;
      await stile(['revoke', '--token-id', first.link.token_id, '--reason', 'browser test', '--wait']);
      if (segment) {
        const r = await fetch(segment, { headers: args.transport === 'cookie' ? { cookie: await cookieHeader(context, segment) } : {} });
        out.refetch = { status: r.status, reason: r.headers.get('x-stile-reason') };
      }
    }
  } else if (args.scenario === 'revoke') {
    await page.goto(pageUrl(), { waitUntil: 'load' });
    const after = args.revoke_after ?? 3;
    await until(page, 40, (s) => s.state === 'playing' || fatal(s));
    await setRate(page);
    const { s: before } = await until(page, 40 + after, (s) => s.currentTime >= after || fatal(s));
    out.before = before;
    if (before.currentTime >= after && before.link) {
      const by = args.by || 'token';
      if (by === 'token') {
        await stile(['revoke', '--token-id', before.link.token_id, '--reason', 'browser test', '--wait']);
      } else if (by === 'subject') {
        await stile(['revoke', '--subject', 'web-viewer', '--reason', 'browser test', '--wait']);
      } else if (by === 'key') {
        // The link is signed with `stile dev`'s first key: rotate, then revoke (retire) it.
        // (The new key becomes active once the fleet has it; until then key 1 cannot be retired.)
        await stile(['keys', 'rotate', '--reason', 'browser test']);
        for (let tries = 0; ; tries++) {
          try {
            await stile(['revoke', '--key-id', '1', '--reason', 'browser test', '--wait']);
            break;
          } catch (e) {
            if (tries >= 50) throw e;
            await page.waitForTimeout(200);
          }
        }
      } else {
        throw new Error(`unknown revocation kind ${by}`);
      }
      // From the moment every edge enforces it to the player saying so.
      const { s, ms } = await until(page, 20, (s) => s.state === 'stopped' || s.state === 'error');
      out.after = s;
      out.revoked_to_reported_ms = ms;
    }
  } else if (args.scenario === 'forged') {
    // A real link from the backend with one signature character changed.
    const api = new URL('api/link', args.page);
    api.searchParams.set('format', args.format);
    api.searchParams.set('transport', args.transport);
    const link = await (await fetch(api)).json();
    const url = new URL(link.url);
    const token = url.searchParams.get('st');
    const flipped = token.slice(0, -3) + (token.at(-3) === 'A' ? 'B' : 'A') + token.slice(-2);
    url.searchParams.set('st', flipped);
    out.forged_url = url.toString().replace(flipped, 'FORGED');
    await page.goto(pageUrl({ src: url.toString() }), { waitUntil: 'load' });
    const { s } = await until(page, 20, (s) => s.state === 'stopped' || s.state === 'error');
    out.after = s;
    out.token_in_errors = JSON.stringify(s.errors).includes(flipped);
  } else {
    throw new Error(`unknown scenario ${args.scenario}`);
  }
  // Let the frame on screen settle, then keep a picture of what the viewer saw.
  await page.waitForTimeout(300);
  await page.screenshot({ path: args.screenshot, fullPage: true });
  out.screenshot = args.screenshot;
} catch (e) {
  out.exception = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
out.log = browserLog.slice(-40);
process.stdout.write(JSON.stringify(out) + '\n');
