// Times each page of a running `saegap ui` until it is idle, in a real browser (bench/ui.py runs it).
// Usage: node idle.mjs <base url> <repeats> <path>...   Prints one JSON line per page.
// A visit's time runs from navigation to the first of three consecutive idle checks (50 ms apart): the
// script not running (stApp's data-test-script-state), no spinner, skeleton or stale element;
// the first visit finds the server's query cache cold, later visits (new tabs) find it warm. Every tab is
// opened in one browser context, as a user's tabs share the browser's cache: the app's static files
// (Streamlit's JavaScript) are fetched once, on the untimed first visit, whose time is printed apart.
import { chromium } from "playwright-core";

const [base, repeats, ...paths] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"];

function busy() {
  const text = document.body.innerText;
  // The script's own state first: the status widget shows a few hundred ms after a run starts, so a page whose
  // title is drawn before it looked idle while its queries still ran.
  return document.querySelector('[data-testid="stApp"]')?.getAttribute("data-test-script-state") !== "notRunning"
    || !document.querySelector('[data-testid="stMain"] h1')
    || Boolean(document.querySelector('[data-testid="stSkeleton"]'))
    || Boolean(document.querySelector('[data-testid="stStatusWidget"]'))
    || Boolean(document.querySelector('[data-testid="stSpinner"]'))
    || Boolean(document.querySelector('[data-stale="true"]'))
    || text.includes("querying the store")
    || [...document.querySelectorAll("button")].some((b) => b.innerText.trim() === "Stop");
}

async function visit(context, path) {
  const page = await context.newPage();
  const start = performance.now();
  await page.goto(`${base}/${path}`);
  let idleSince = null;
  for (let idle = 0; idle < 3;) {
    await page.waitForTimeout(50);
    if (await page.evaluate(busy)) { idle = 0; idleSince = null; } else { idle += 1; idleSince ??= performance.now(); }
  }
  const failed = await page.locator('[data-testid="stException"]').count();
  await page.close();
  return { seconds: (idleSince - start) / 1000, failed };
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  // the server's first script run (imports) and the browser's first fetch of the app are not any page's cost
  const first = await visit(context, "sql_console");
  console.log(JSON.stringify({ first_visit_empty_browser_cache_s: +first.seconds.toFixed(2) }));
  for (const path of paths) {
    const times = [];
    for (let i = 0; i < Number(repeats); i++) times.push(await visit(context, path));
    const warm = times.slice(1).map((t) => t.seconds);
    console.log(JSON.stringify({ page: path, cold_s: +times[0].seconds.toFixed(2),
      warm_best_s: warm.length ? +Math.min(...warm).toFixed(2) : null, exceptions: times.reduce((a, t) => a + t.failed, 0) }));
  }
} finally {
  await browser.close();
}
