// End-to-end test of Mandate's browser pages in headless Chromium.
//
// A real `mandate serve` (from $MANDATE_BIN, default <repo>/target/debug/mandate)
// runs on loopback with a temporary data directory. Chromium, driven by
// playwright-core, signs in with the keyboard only, consents with a reduced
// scope set (files:delete unchecked), lands on the client's redirect URI, and
// the code is exchanged for tokens. The connected agents page then lists the
// grant; revoking it there ends the refresh token.
//
// Every page is also checked for console errors (CSP violations included) and
// for an accessible name on every form control, and a full-page screenshot of
// the sign-in, consent and connected agents pages is written to
// ${SCREENSHOT_DIR:-<repo>/docs/screenshots}.
//
// Run: npm ci --prefix tests/browser && node --test tests/browser/
// Needs Debian's chromium at /usr/bin/chromium (or $CHROMIUM_PATH); it never
// downloads a browser.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MANDATE_BIN = process.env.MANDATE_BIN || path.join(REPO, 'target', 'debug', 'mandate');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || path.join(REPO, 'docs', 'screenshots');

// Flags this machine needs: no sandbox as root, no GPU, and nothing that
// phones home (the network is closed, so those connections only add noise).
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const CLIENT_ID = 'desktop-assistant';
const RESOURCE = 'https://files.example.com/mcp';
const USERNAME = 'alice';
const PASSWORD = 'correct horse battery staple';
// RFC 7636 appendix B.
const CODE_VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
const CODE_CHALLENGE = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM';
const STATE = 'xyz';

/** A TCP port that was free a moment ago. */
async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** POSTs an application/x-www-form-urlencoded body; returns status and parsed JSON. */
async function postForm(url, fields) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

describe('sign-in, consent and connected agents in Chromium', { timeout: 180_000 }, () => {
  let tmp;
  let server; // the mandate child process
  let serverLog = '';
  let base; // issuer, e.g. http://127.0.0.1:PORT
  let callback; // { server, url, hits: [URL] }
  let context;
  let page;
  /** Console errors and uncaught page errors, with the URL they happened on. */
  let problems = [];
  let tokens;

  before(async () => {
    await stat(MANDATE_BIN).catch(() => {
      throw new Error(`no mandate binary at ${MANDATE_BIN}: run \`cargo build -p mandate\` or set MANDATE_BIN`);
    });
    await stat(CHROMIUM).catch(() => {
      throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
    });
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    tmp = await mkdtemp(path.join(os.tmpdir(), 'mandate-browser-'));

    // The client's redirect URI: a tiny server that records what it receives.
    const hits = [];
    const cbServer = http.createServer((req, res) => {
      const url = new URL(req.url, 'http://127.0.0.1');
      if (url.pathname === '/callback') hits.push(url);
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('done');
    });
    cbServer.listen(0, '127.0.0.1');
    await once(cbServer, 'listening');
    callback = {
      server: cbServer,
      url: `http://127.0.0.1:${cbServer.address().port}/callback`,
      hits,
    };

    const port = await freePort();
    const adminPort = await freePort();
    base = `http://127.0.0.1:${port}`;
    const dataDir = path.join(tmp, 'data');
    const configPath = path.join(tmp, 'mandate.toml');
    const config = `\
issuer = "${base}"
listen = "127.0.0.1:${port}"

[admin]
listen = "127.0.0.1:${adminPort}"

[[resources]]
id = "${RESOURCE}"
name = "Files"
scopes = { "files:read" = "Read your files", "files:write" = "Change your files", "files:delete" = "Delete your files" }

[[clients]]
client_id = "${CLIENT_ID}"
name = "Desktop Assistant"
grant_types = ["authorization_code", "refresh_token"]
scopes = ["files:read", "files:write", "files:delete"]
token_endpoint_auth_method = "none"
redirect_uris = ["${callback.url}"]
`;
    await writeFile(configPath, config);

    // Only this test's configuration: no MANDATE_* from the caller's environment.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('MANDATE_')),
    );
    env.RUST_LOG = env.RUST_LOG || 'warn';
    server = spawn(MANDATE_BIN, ['serve', '--config', configPath, '--data-dir', dataDir], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server.stdout.on('data', (d) => { serverLog += d; });
    server.stderr.on('data', (d) => { serverLog += d; });
    let exited = null;
    server.on('exit', (code, signal) => { exited = { code, signal }; });

    // Wait for GET /readyz to answer 200.
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) {
        throw new Error(`mandate exited early (${JSON.stringify(exited)}):\n${serverLog}`);
      }
      try {
        const res = await fetch(`${base}/readyz`);
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`mandate not ready after 30s:\n${serverLog}`);
      await sleep(100);
    }

    // A user, through the admin API with the token made at first start.
    const adminToken = (await readFile(path.join(dataDir, 'admin.token'), 'utf8')).trim();
    const res = await fetch(`http://127.0.0.1:${adminPort}/admin/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ username: USERNAME, password: PASSWORD }),
    });
    assert.ok(res.ok, `creating the user: ${res.status} ${await res.text()}`);

    // A new, empty profile for every run; fixed size, scale, locale, time zone
    // and colour scheme so the screenshots come out the same each time.
    context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 900, height: 700 },
      deviceScaleFactor: 1,
      locale: 'en-US',
      timezoneId: 'UTC',
      colorScheme: 'light',
      reducedMotion: 'reduce',
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console error on ${page.url()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGTERM');
      await Promise.race([once(server, 'exit'), sleep(5_000)]);
      if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
    }
    callback?.server.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** Fails if the current page logged an error; then starts a fresh list. */
  function assertNoConsoleErrors() {
    const found = problems;
    problems = [];
    assert.deepEqual(found, [], 'the page logged errors');
  }

  /**
   * Every visible form control has a non-empty accessible name: inputs through
   * a <label for>, buttons through their text. Checked in the DOM (labels
   * really point at the control) and through the accessibility tree (what a
   * screen reader is given).
   */
  async function assertControlsLabelled() {
    const unlabelled = await page.evaluate(() => {
      const bad = [];
      for (const el of document.querySelectorAll('input, select, textarea')) {
        if (el.type === 'hidden') continue;
        const text = [...(el.labels ?? [])].map((l) => l.textContent.trim()).join(' ');
        if (!text && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby')) {
          bad.push(el.outerHTML);
        }
      }
      for (const el of document.querySelectorAll('button')) {
        if (!el.textContent.trim() && !el.getAttribute('aria-label')) bad.push(el.outerHTML);
      }
      return bad;
    });
    assert.deepEqual(unlabelled, [], 'form controls without a label');

    const tree = await page.locator('body').ariaSnapshot();
    for (const line of tree.split('\n')) {
      const m = line.match(/^\s*- (textbox|checkbox|button|combobox|radio)\b(.*)$/);
      if (m) assert.match(m[2], /^ "[^"]+"/, `no accessible name in the tree: ${line.trim()}`);
    }
  }

  /** The page has one <h1>, a <main> landmark, a title and a language. */
  async function assertPageStructure(heading) {
    assert.equal(await page.locator('html').getAttribute('lang'), 'en');
    assert.match(await page.title(), / - Mandate$/);
    assert.equal(await page.getByRole('main').count(), 1, 'one <main> landmark');
    assert.equal(await page.getByRole('heading', { level: 1 }).count(), 1, 'one <h1>');
    if (heading) {
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), heading);
    }
  }

  /**
   * A full-page screenshot. `mask` lists locators painted over with a flat
   * grey box: used for values that change on every run (the grant's time),
   * so the committed images only change when the pages do.
   */
  async function screenshot(name, mask = []) {
    await page.screenshot({
      path: path.join(SCREENSHOT_DIR, name),
      fullPage: true,
      animations: 'disabled',
      caret: 'hide',
      mask,
      maskColor: '#e5e7eb',
    });
  }

  it('shows the sign-in page for a new authorization request', async () => {
    const query = new URLSearchParams({
      response_type: 'code',
      client_id: CLIENT_ID,
      redirect_uri: callback.url,
      code_challenge: CODE_CHALLENGE,
      code_challenge_method: 'S256',
      state: STATE,
      resource: RESOURCE,
      scope: 'files:read files:write files:delete',
    });
    const res = await page.goto(`${base}/authorize?${query}`);
    assert.equal(res.status(), 200);
    await assertPageStructure('Sign in');
    assert.match(await page.getByRole('main').innerText(), /Sign in to continue to Desktop Assistant/);
    await page.getByLabel('Username', { exact: true }).waitFor();
    await page.getByLabel('Password', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    await assertControlsLabelled();
    assertNoConsoleErrors();
    await screenshot('login.png');
  });

  it('signs in with the keyboard alone', async () => {
    // Source order: Username, Password, then the button.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'username');
    // Keyboard focus is visible (the 3px outline from the stylesheet).
    const outline = await page.evaluate(() => {
      const s = getComputedStyle(document.activeElement);
      return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
    });
    assert.equal(outline.style, 'solid', 'keyboard focus shows an outline');
    assert.ok(outline.width >= 2, `focus outline is ${outline.width}px`);
    await page.keyboard.type(USERNAME);

    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'password');
    await page.keyboard.type(PASSWORD);

    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate(() => document.activeElement?.textContent?.trim()),
      'Sign in',
      'the Sign in button comes next in tab order',
    );
    // Enter in the password field would submit too; Enter on the focused
    // button is the same for a keyboard user.
    await Promise.all([page.waitForURL(`${base}/login`), page.keyboard.press('Enter')]);
    await page.getByRole('heading', { level: 1, name: 'Desktop Assistant' }).waitFor();
  });

  it('asks for consent with one checkbox per scope, all checked', async () => {
    await assertPageStructure('Desktop Assistant');
    const group = page.getByRole('group', { name: 'Permissions requested' });
    await group.waitFor();
    const boxes = group.getByRole('checkbox');
    assert.equal(await boxes.count(), 3);
    // The server lists scopes in its own (sorted) order; compare as a set.
    const values = await page.locator('input[type=checkbox][name=scope]').evaluateAll(
      (els) => els.map((e) => [e.value, e.checked]),
    );
    assert.deepEqual(values.sort(), [
      ['files:delete', true],
      ['files:read', true],
      ['files:write', true],
    ]);
    for (const label of ['Read your files', 'Change your files', 'Delete your files']) {
      assert.equal(await page.getByLabel(label).isChecked(), true, `"${label}" is checked`);
    }
    await page.getByRole('button', { name: 'Allow', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Deny', exact: true }).waitFor();
    assert.match(await page.getByRole('main').innerText(), /Signed in as alice/);
    await assertControlsLabelled();
    assertNoConsoleErrors();

    // Reduce the scope set: keep read and write, drop delete.
    await page.getByLabel('Delete your files').uncheck();
    assert.equal(await page.getByLabel('Delete your files').isChecked(), false);
    await screenshot('consent.png');
  });

  it('redirects to the client with a code after Allow', async () => {
    await Promise.all([
      page.waitForURL((url) => url.href.startsWith(callback.url)),
      page.getByRole('button', { name: 'Allow', exact: true }).click(),
    ]);
    assert.equal(await page.locator('body').innerText(), 'done');
    assert.equal(callback.hits.length, 1, 'the callback was called once');
    const q = callback.hits[0].searchParams;
    assert.ok(q.get('code'), 'a code in the redirect');
    assert.equal(q.get('state'), STATE);
    assert.equal(q.get('iss'), base);
    assert.equal(q.get('error'), null);
    assertNoConsoleErrors();
  });

  it('exchanges the code for tokens carrying only the scopes allowed', async () => {
    const code = callback.hits[0].searchParams.get('code');
    const res = await postForm(`${base}/token`, {
      grant_type: 'authorization_code',
      client_id: CLIENT_ID,
      code,
      redirect_uri: callback.url,
      code_verifier: CODE_VERIFIER,
    });
    assert.equal(res.status, 200, res.text);
    assert.ok(res.json.access_token, 'an access token');
    assert.ok(res.json.refresh_token, 'a refresh token');
    assert.equal(res.json.scope, 'files:read files:write');
    tokens = res.json;
  });

  it('lists the grant on the connected agents page', async () => {
    const res = await page.goto(`${base}/grants`);
    assert.equal(res.status(), 200);
    await assertPageStructure('Connected agents');
    const table = page.getByRole('table', { name: 'Agents with access to your account' });
    await table.waitFor();
    const rows = table.locator('tbody').getByRole('row');
    assert.equal(await rows.count(), 1);
    const cells = await rows.first().getByRole('cell').allInnerTexts();
    assert.match(cells[0], /Desktop Assistant/);
    assert.equal(cells[1], RESOURCE);
    assert.equal(cells[2], 'files:read files:write');
    assert.ok(cells[3].trim(), 'a time in the Granted column');
    // The scrollable table wrapper is a named, focusable region.
    await page.getByRole('region', { name: 'Agents with access to your account' }).waitFor();
    await page.getByRole('button', { name: 'Revoke access to Desktop Assistant', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
    await assertControlsLabelled();
    assertNoConsoleErrors();
    // The "Granted" cell (4th column) holds the time of this run's grant.
    await screenshot('connected-agents.png', [rows.first().getByRole('cell').nth(3)]);
  });

  it('revokes the grant from the connected agents page', async () => {
    await Promise.all([
      page.waitForURL(`${base}/grants?revoked=1`),
      page.getByRole('button', { name: 'Revoke access to Desktop Assistant', exact: true }).click(),
    ]);
    assert.equal(await page.getByRole('status').innerText(), 'Access revoked.');
    assert.equal(await page.getByRole('table').count(), 0, 'no grants table');
    assert.equal(await page.getByRole('button', { name: /^Revoke access/ }).count(), 0, 'no revoke button');
    assert.match(await page.getByRole('main').innerText(), /No agents have access to your account/);
    await assertPageStructure('Connected agents');
    await assertControlsLabelled();
    assertNoConsoleErrors();
  });

  it('refuses the refresh token of the revoked grant', async () => {
    assert.ok(tokens?.refresh_token, 'tokens from the earlier step');
    const res = await postForm(`${base}/token`, {
      grant_type: 'refresh_token',
      client_id: CLIENT_ID,
      refresh_token: tokens.refresh_token,
    });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json?.error, 'invalid_grant');
  });
});
