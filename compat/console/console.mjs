// The console's browser scenario: Debian's chromium, driven headless by
// playwright-core, against `pgbroker serve` (started by console_run.sh).
// Prints one PASS or FAIL line per check; exits 1 if any failed.
//
// Environment: CONSOLE_URL, KAFKA (host:port), PGBROKER_BIN, DB, SCHEMA,
// CONSOLE_USER, CONSOLE_PASSWORD; SCREENSHOTS (a folder) to save a picture
// of each page; CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';

const BASE = process.env.CONSOLE_URL;
const KAFKA = process.env.KAFKA;
const USER = process.env.CONSOLE_USER;
const PASSWORD = process.env.CONSOLE_PASSWORD;
const SHOTS = process.env.SCREENSHOTS || '';
let failed = 0;

function check(name, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
  if (!ok) failed++;
}

function pgb(...args) {
  return execFileSync(process.env.PGBROKER_BIN, ['--database-url', process.env.DB, '--schema', process.env.SCHEMA, ...args],
    { encoding: 'utf8' });
}

function kcat(args, input) {
  return execFileSync('kcat', ['-b', KAFKA, ...args], { input, encoding: 'utf8', timeout: 60000 });
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: false });
}

async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise(r => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('pageerror', e => consoleErrors.push(String(e)));
page.on('dialog', d => { consoleErrors.push(`unexpected dialog: ${d.message()}`); d.dismiss(); });

try {
  // Without a session the API refuses.
  const anon = await fetch(`${BASE}/api/topics`);
  check('unauthenticated request refused', anon.status === 401, `status ${anon.status}`);

  // Log in.
  await page.goto(`${BASE}/console/`);
  await page.getByLabel('User').fill(USER);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('wrong user name or password').waitFor();
  check('wrong password refused in the page', true);
  await shot(page, 'login');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#nav').waitFor({ state: 'visible' });
  await page.getByText('Produce rate').waitFor();
  check('logged in', (await page.locator('#who').textContent()).includes(USER));
  const cookies = await context.cookies();
  const session = cookies.find(c => c.name === 'pgbroker_console');
  check('session cookie HttpOnly and SameSite=Strict', session && session.httpOnly && session.sameSite === 'Strict',
    JSON.stringify(session && { httpOnly: session.httpOnly, sameSite: session.sameSite }));

  // A change without the CSRF token, from the logged-in page: refused.
  const noCsrf = await page.evaluate(async () => {
    const r = await fetch('/api/topics', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"no-csrf"}' });
    return r.status;
  });
  const topicsAfter = JSON.parse(pgb('topic', 'list', '--format', 'json') || '[]');
  check('request without CSRF token refused', noCsrf === 403 && !JSON.stringify(topicsAfter).includes('no-csrf'), `status ${noCsrf}`);

  // Create a topic in the page.
  await page.goto(`${BASE}/console/#/topics`);
  await page.getByLabel('Name').fill('web-orders');
  await page.getByLabel('Partitions').fill('2');
  await page.getByRole('button', { name: 'Create topic' }).click();
  await page.getByRole('link', { name: 'web-orders' }).waitFor();
  check('topic created in the console', pgb('topic', 'list').includes('web-orders'));

  // Produce with kcat, hostile text included, and see it in the browser.
  const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
  kcat(['-P', '-t', 'web-orders', '-p', '0', '-K', '\t', '-H', `origin=<b onmouseover="window.__pwned=3">x</b>`],
    ['k1\thello-1', 'k2\thello-2', 'k3\t{"n":3,"note":"json"}', `<i>key</i>\t${hostile}`].join('\n') + '\n');
  await page.goto(`${BASE}/console/#/topics/web-orders/messages`);
  await page.getByRole('button', { name: 'Load' }).click();
  await until('kcat messages in the browser', async () => (await page.locator('table.messages tbody tr').count()) >= 4);
  const text = await page.locator('table.messages').textContent();
  check('messages produced with kcat seen in the browser', text.includes('hello-1') && text.includes('hello-2'));
  await page.getByLabel('Show as').selectOption('json');
  const pretty = await page.locator('table.messages tr[data-offset="2"] pre').nth(1).textContent();
  check('JSON value pretty-printed', pretty.includes('"n": 3'), pretty);
  await shot(page, 'messages');
  await page.getByLabel('Show as').selectOption('hex');
  const hex = await page.locator('table.messages tr[data-offset="0"] pre').nth(1).textContent();
  check('value shown as hex', hex.includes('68 65 6c 6c 6f'), hex);
  await page.getByLabel('Show as').selectOption('utf8');
  const hostileCell = await page.locator('table.messages tr[data-offset="3"]').textContent();
  const injected = await page.evaluate(() => ({
    pwned: window.__pwned ?? null,
    imgs: document.querySelectorAll('main img, main script, main b[onmouseover], main i').length,
  }));
  check('hostile key, value and header shown as text, never run',
    hostileCell.includes(hostile) && hostileCell.includes('<i>key</i>') && hostileCell.includes('onmouseover') &&
      injected.pwned === null && injected.imgs === 0, JSON.stringify(injected));

  // A consumer group: consume to the end, fall behind, catch up.
  const consume = () => kcat(['-G', 'web-readers', '-X', 'auto.offset.reset=earliest', '-X', 'auto.commit.interval.ms=100',
    '-e', '-q', 'web-orders']);
  consume();
  kcat(['-P', '-t', 'web-orders', '-p', '1'], Array.from({ length: 30 }, (_, i) => `late-${i}`).join('\n') + '\n');
  await page.goto(`${BASE}/console/#/groups/web-readers`);
  const lag = async () => Number((await page.getByTestId('total-lag').textContent()).replace(/,/g, ''));
  await until('lag of 30', async () => (await lag()) === 30);
  check('group lag seen in the browser', true);
  const consumer = spawn('kcat', ['-b', KAFKA, '-G', 'web-readers', '-X', 'auto.offset.reset=earliest', '-X', 'auto.commit.interval.ms=100', '-e', '-q', 'web-orders'],
    { stdio: 'ignore' });
  await until('lag falling to 0', async () => (await lag()) === 0, 45000);
  check('group lag fell to 0 in the browser', true);
  consumer.kill();
  await until('a lag chart', async () => (await page.locator('.chart svg path').count()) >= 1, 20000);
  await shot(page, 'group');
  await page.goto(`${BASE}/console/#/groups`);
  await page.getByRole('link', { name: 'web-readers' }).waitFor();
  await shot(page, 'groups');

  // A dead letter made with the queue CLI, redriven from the console.
  pgb('queue', 'create', 'work.dlq');
  pgb('queue', 'create', 'work', '--max-attempts', '1', '--dead-letter', 'work.dlq');
  execFileSync(process.env.PGBROKER_BIN, ['--database-url', process.env.DB, '--schema', process.env.SCHEMA, 'queue', 'send', 'work'],
    { input: '<script>window.__pwned=4</script>job-1\n' });
  const received = pgb('queue', 'receive', 'work', '--max', '1').trim().split('\t');
  pgb('queue', 'nack', 'work', received[0], '--error', '<img src=x onerror="window.__pwned=5">failed');
  await page.goto(`${BASE}/console/#/queues/work.dlq`);
  await page.getByRole('tab', { name: 'Dead letters held here' }).click();
  await until('the dead letter', async () => (await page.locator('table.messages tbody tr[data-id]').count()) === 1);
  const deadRow = await page.locator('table.messages tbody tr[data-id]').textContent();
  check('dead letter browsed with its last error, as text', deadRow.includes('<img src=x onerror="window.__pwned=5">failed') &&
    deadRow.includes('<script>window.__pwned=4</script>job-1'), deadRow);
  await shot(page, 'queue');
  await page.getByRole('button', { name: 'Redrive dead letters' }).click();
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.getByText('Redrove 1 messages.').waitFor();
  await page.goto(`${BASE}/console/#/queues/work`);
  await until('ready again', async () => (await page.getByTestId('ready').textContent()) === '1');
  const stats = JSON.parse(pgb('queue', 'stats', 'work', '--format', 'json'));
  check('redriven from the console and ready again', stats.ready === 1 && stats.dead_lettered === 0, JSON.stringify(stats));
  await page.goto(`${BASE}/console/#/queues`);
  await page.getByRole('link', { name: 'work', exact: true }).waitFor();
  await shot(page, 'queues');

  // Purge needs the queue's name typed.
  await page.goto(`${BASE}/console/#/queues/work`);
  await page.getByRole('button', { name: 'Purge' }).click();
  const confirm = page.getByRole('button', { name: 'Confirm' });
  const disabledFirst = await confirm.isDisabled();
  await page.getByLabel('confirmation').fill('work');
  await confirm.click();
  await page.getByText('Purged 1 messages.').waitFor();
  check('purge asks for the name, then purges', disabledFirst);

  // The other pages, for the pictures and for errors.
  await page.goto(`${BASE}/console/#/topics/web-orders`);
  await page.getByText('High watermark').waitFor();
  await shot(page, 'topic');
  await page.goto(`${BASE}/console/#/topics`);
  await page.getByRole('link', { name: 'web-orders' }).waitFor();
  await shot(page, 'topics');
  await page.goto(`${BASE}/console/#/users`);
  await page.getByText('Grants').waitFor();
  check('users and ACLs page lists the user', (await page.locator('main').textContent()).includes(USER));
  await shot(page, 'users');
  await page.goto(`${BASE}/console/#/overview`);
  await until('rates drawn', async () => (await page.locator('.chart svg').count()) >= 1, 20000);
  await shot(page, 'overview');

  const pwned = await page.evaluate(() => window.__pwned ?? null);
  check('no script from data ran, no page errors', pwned === null && consoleErrors.length === 0, consoleErrors.join('; '));
} catch (e) {
  check('scenario', false, String(e && e.stack || e));
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/failure.png` }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
