// Drives Debian chromium through every page of a running `saegap ui`, submits a job, waits for it
// to finish, opens the correlation explorer on it and saves one screenshot per page.
// Usage: node drive.mjs <base url> <screenshot dir> <model> <sae> <tokens>
import { chromium } from "playwright-core";

const [base, shots, model, sae, tokens] = process.argv.slice(2);
const PAGES = ["layer_summary", "distributions", "correlations", "tokens", "single_token", "context", "sql_console"];
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// True while Streamlit is still running the page's script or its queries.
function busy() {
  const text = document.body.innerText;
  return Boolean(document.querySelector('[data-testid="stStatusWidget"]'))
    || Boolean(document.querySelector('[data-testid="stSpinner"]'))
    || text.includes("querying the store")  // st.cache_data's spinner text
    || [...document.querySelectorAll("button")].some((b) => b.innerText.trim() === "Stop");  // script running
}

async function settle(page) {
  await page.waitForSelector('[data-testid="stApp"]', { timeout: 60000 });
  // A run may start just after navigation: only a page found idle on three checks 1 s apart is done.
  for (let idle = 0; idle < 3;) {
    await page.waitForTimeout(1000);
    idle = (await page.evaluate(busy)) ? 0 : idle + 1;
  }
  const failed = await page.locator('[data-testid="stException"]').count();
  if (failed) throw new Error(`exception shown on ${page.url()}: ${await page.locator('[data-testid="stException"]').first().innerText()}`);
}

async function submitJob(page) {
  await page.goto(`${base}/`);  // the default page has the root URL
  await settle(page);
  await page.getByLabel("Model", { exact: true }).fill(model);
  await page.getByLabel("SAEs, one per line", { exact: true }).fill(sae);
  await page.getByLabel("Token set", { exact: true }).fill(tokens);
  await page.getByLabel("Sequences (0 = all)", { exact: true }).fill("4");
  await page.getByRole("button", { name: "Submit job" }).click();
  await page.getByText(/started in this server's background thread|queued for the workers/).waitFor({ timeout: 60000 });
  for (let i = 0; i < 120; i++) {
    await page.getByRole("button", { name: "Refresh" }).click();
    await settle(page);
    const latest = await page.getByText(/^Latest: job/).innerText();
    if (/done/.test(latest)) return latest;
    if (/failed|cancelled/.test(latest)) throw new Error(`job did not finish: ${latest}`);
    await page.waitForTimeout(2000);
  }
  throw new Error("job still running after 4 minutes");
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const latest = await submitJob(page);
  console.log(latest);
  await page.screenshot({ path: `${shots}/jobs.png`, fullPage: true });
  for (const name of PAGES) {
    await page.goto(`${base}/${name}`);
    await settle(page);
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  }
  // The correlation explorer on the new job: it is the newest, so pick it in the sidebar.
  await page.goto(`${base}/correlations`);
  await settle(page);
  await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first().click();
  await page.locator('[role="option"]').first().click();
  await settle(page);
  const pearson = await page.locator('[data-testid="stMetric"]').first().innerText();
  if (!/Pearson/.test(pearson)) throw new Error(`no correlation shown for the new job: ${pearson}`);
  console.log(pearson.replace(/\n/g, " "));
  await page.screenshot({ path: `${shots}/correlations_new_job.png`, fullPage: true });
} finally {
  await browser.close();
}
