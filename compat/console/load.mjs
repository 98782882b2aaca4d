// Times the console in Debian's chromium (driven by playwright-core): how
// long each page takes until its data is drawn, as the median of RUNS
// loads; or, with HOLD=seconds, keeps the overview open (it refreshes
// itself every 5 s) for that long, or with HOLD_BLANK an empty page. Prints one line per page. Measures
// only; asserts nothing. Started by scripts/console-load.sh.
//
// Environment: CONSOLE_URL, CONSOLE_USER, CONSOLE_PASSWORD, PAGES (a
// comma-separated list of hash routes and the text that says each is
// drawn, as route=text), RUNS (default 5), HOLD, CHROMIUM; RESULTS, a
// JSON-lines file to which each page's times are appended as a
// `page-load` line of pgbroker-bench (system `chromium`), with
// PARTITIONS, the partitions of the topic and group the pages show.
import { appendFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

// The harness's name of the page at a hash route.
function pageName(route) {
  const [kind, name, sub] = route.split('/');
  if (sub === 'messages') return 'messages';
  if (!name) return kind;
  return { topics: 'topic', groups: 'group', queues: 'queue' }[kind] || route;
}

const BASE = process.env.CONSOLE_URL;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
await page.goto(`${BASE}/console/`);
await page.getByLabel('User').fill(process.env.CONSOLE_USER);
await page.getByLabel('Password').fill(process.env.CONSOLE_PASSWORD);
await page.getByRole('button', { name: 'Log in' }).click();
await page.locator('#nav').waitFor({ state: 'visible' });

if (process.env.HOLD) {
  // HOLD_BLANK: the browser alone, on an empty page, to tell its own CPU
  // use from the console's load on the broker.
  await page.goto(process.env.HOLD_BLANK ? 'about:blank' : `${BASE}/console/#/overview`);
  await page.waitForTimeout(Number(process.env.HOLD) * 1000);
  console.log(`held ${process.env.HOLD_BLANK ? 'an empty page' : 'the overview'} open for ${process.env.HOLD} s`);
} else {
  const runs = Number(process.env.RUNS || 5);
  for (const spec of (process.env.PAGES || '').split(',').filter(Boolean)) {
    const [route, text] = spec.split('=');
    const times = [];
    for (let i = 0; i < runs; i++) {
      await page.goto('about:blank');
      const t0 = Date.now();
      await page.goto(`${BASE}/console/#/${route}`);
      await page.getByText(text, { exact: false }).first().waitFor({ timeout: 60000 });
      times.push(Date.now() - t0);
    }
    times.sort((a, b) => a - b);
    if (process.env.RESULTS) {
      const at = q => times[Math.max(1, Math.ceil(q * times.length)) - 1];
      appendFileSync(process.env.RESULTS, JSON.stringify({
        kind: 'page-load', scenario: 'console-pages', system: 'chromium', page: pageName(route),
        partitions: Number(process.env.PARTITIONS || 0), round: 1, samples: runs,
        median_ms: at(0.5), p99_ms: at(0.99), max_ms: times[times.length - 1], bytes: 0,
      }) + '\n');
    }
    console.log(`page #/${route}: median ${times[Math.floor(times.length / 2)]} ms, min ${times[0]} ms, max ${times[times.length - 1]} ms (${runs} loads)`);
  }
}
await browser.close();
