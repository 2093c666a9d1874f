// Drives Debian chromium through every page of a running `saegap ui` on the fixture store (an all-token job
// with two SAEs at one layer, a single-token job with 50 draws per token), then submits an attention (hook_z)
// job on the bundled demo model, waits for it on the self-refreshing Jobs page and follows its result link.
// Asserts what a user sees; saves one screenshot per page. Prints one line per check ("ok ...").
// Usage: node drive.mjs <base url> <screenshot dir> <all-token job id> <single-token job id> <model> <sae> <tokens>
import { chromium } from "playwright-core";

const [base, shots, allJob, singleJob, model, sae, tokens] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// True while Streamlit is still running the page's script or its queries.
function busy() {
  const text = document.body.innerText;
  return Boolean(document.querySelector('[data-testid="stStatusWidget"]'))
    || Boolean(document.querySelector('[data-testid="stSpinner"]'))
    || Boolean(document.querySelector('[data-stale="true"]'))  // elements from before the rerun
    || text.includes("querying the store")  // st.cache_data's spinner text
    || [...document.querySelectorAll("button")].some((b) => b.innerText.trim() === "Stop");  // script running
}

function check(ok, message) {
  if (!ok) throw new Error(`FAILED: ${message}`);
  console.log(`ok ${message}`);
}

async function settle(page) {
  await page.waitForSelector('[data-testid="stApp"]', { timeout: 120000 });
  // A run may start just after navigation: only a page found idle on three checks 0.5 s apart is done.
  for (let idle = 0; idle < 3;) {
    await page.waitForTimeout(500);
    idle = (await page.evaluate(busy)) ? 0 : idle + 1;
  }
  const failed = page.locator('[data-testid="stException"]');
  if (await failed.count()) throw new Error(`exception shown on ${page.url()}: ${await failed.first().innerText()}`);
  const text = await page.locator("body").innerText();
  check(!/Traceback|SchemaValidationError|StreamlitAPIException/.test(text), `no exception text on ${page.url()}`);
}

async function open(page, path) {
  await page.goto(`${base}/${path}`);
  await settle(page);
  return page.locator("body").innerText();
}

const axisLabel = (page, title) => page.locator(`[aria-label^="X-axis titled '${title}"]`).first().getAttribute("aria-label");

async function fixturePages(page) {
  let text = await open(page, `layer_summary?job=${allJob}`);
  check(text.includes("Verdict: the gap survives the anisotropic baselines in 3 of 4 runs"), "verdict sentence");
  check(text.includes("fixture-b/blocks.1.hook_resid_pre"), "second SAE named in full");
  await page.screenshot({ path: `${shots}/layer_summary.png`, fullPage: true });

  text = await open(page, `distributions?job=${allJob}`);
  check(text.includes("p99.9") && !text.includes("zero_ablation"), "p99.9 printed, ablations off by default");
  await page.screenshot({ path: `${shots}/distributions.png`, fullPage: true });

  text = await open(page, `correlations?job=${allJob}`);
  check(text.includes("Pearson r"), "correlation metrics");
  await page.getByText("hexbin (binned density)").click();
  await settle(page);
  const rects = await page.locator('[data-testid="stVegaLiteChart"] .mark-rect.role-mark path').count();
  check(rects > 10, `hexbin plot renders (${rects} cells)`);
  await page.screenshot({ path: `${shots}/correlations.png`, fullPage: true });

  text = await open(page, `tokens?job=${allJob}`);
  check(text.includes("␣zebra"), "leading space shown as ␣");
  await page.screenshot({ path: `${shots}/tokens.png`, fullPage: true });

  text = await open(page, `single_token?job=${singleJob}`);
  const offsets = await axisLabel(page, "offset from the target");
  check(/discrete scale with 4 values: 0, 1, 2, 3/.test(offsets), `downstream axis labelled at every offset (${offsets})`);
  check(text.includes("median z") && text.includes("SAE KL"), "z summary and the SAE line's label");
  await page.screenshot({ path: `${shots}/single_token.png`, fullPage: true });

  text = await open(page, `context?job=${allJob}`);
  check(text.includes("Context") && text.includes("␣"), "context text with visible spaces");
  await page.screenshot({ path: `${shots}/context.png`, fullPage: true });

  await open(page, "sql_console");
  await page.screenshot({ path: `${shots}/sql_console.png`, fullPage: true });
}

async function submit(page, saeName) {
  await page.getByLabel("Model", { exact: true }).fill(model);
  await page.getByLabel("SAEs, one per line", { exact: true }).fill(saeName);
  await page.getByLabel("Token set", { exact: true }).fill(tokens);
  await page.getByLabel("Sequences (0 = all)", { exact: true }).fill("4");
  await page.getByRole("button", { name: "Submit job" }).click();
  await settle(page);
}

async function attentionJob(page) {
  await open(page, "");  // the Jobs page has the root URL
  check(await page.title() === "saegap", "page title saegap");
  check(await page.locator('[data-testid="stAppDeployButton"]').count() === 0, "no Deploy button");
  await submit(page, sae.replace(/blocks\.\d+/, "blocks.9"));
  const refused = await page.locator("body").innerText();
  check(refused.includes("has no SAE") && !refused.includes("started in this server"), "unknown SAE refused before starting");
  await submit(page, sae);
  const started = page.getByText(/job \d+ (started in this server's background thread|queued for the workers)/);
  await started.waitFor({ timeout: 120000 });
  const job = (await started.innerText()).match(/job (\d+)/)[1];
  // No clicks from here: the job list refreshes on its own until the job ends.
  const latest = page.getByText(new RegExp(`^Latest: job ${job} · (done|failed|cancelled)`));
  // first(): while the list refreshes, the old line can show beside the new one until the rerun ends
  await latest.first().waitFor({ timeout: 480000 });
  await settle(page);
  const line = await latest.innerText();
  check(/done/.test(line), `attention job finished on its own refresh: ${line}`);
  await latest.scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${shots}/jobs.png`, fullPage: true });
  await page.locator('[data-testid="stPageLink"] a', { hasText: "Layer summary" }).first().click();
  await settle(page);
  const text = await page.locator("body").innerText();
  check(text.includes(`job ${job}`) && text.includes("Verdict: ") && text.includes("attn.hook_z"),
    "result link opens the attention job's layer summary with a verdict");
  await page.screenshot({ path: `${shots}/layer_summary_attention.png`, fullPage: true });
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
  await fixturePages(page);
  await attentionJob(page);
} finally {
  await browser.close();
}
