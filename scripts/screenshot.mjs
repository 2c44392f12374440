// screenshot.mjs - the picture of the search page in README.md
// (docs/page.png): open the page of a running `imgsearch serve` in headless
// Chromium (Debian's, driven by playwright-core), search with an image
// through the file input, wait for every thumbnail, take the viewport.
//
// usage: node scripts/screenshot.mjs URL QUERY_IMAGE OUT.png
// scripts/screenshot.sh starts the server and calls this.
import { chromium } from "playwright-core";

const [url, image, out] = process.argv.slice(2);
if (!url || !image || !out) {
  console.error("usage: node scripts/screenshot.mjs URL QUERY_IMAGE OUT.png");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let rc = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 720 }, deviceScaleFactor: 0.8 });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => /items/.test(document.querySelector("#status").textContent),
    null, { timeout: 15000 });
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/search") && r.request().method() === "POST"),
    page.setInputFiles("#file", image),
  ]);
  await page.waitForSelector("#results .card", { timeout: 15000 });
  await page.waitForFunction(() => [...document.querySelectorAll("#results .card img")]
    .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 20000 });
  // the header, the query and the first row of results; at 0.8 pixels per
  // CSS pixel the PNG stays under 300 KB
  const H = await page.$eval("#results .card", (c) => Math.ceil(c.getBoundingClientRect().bottom) + 10);
  await page.screenshot({ path: out, clip: { x: 0, y: 0, width: 1000, height: H } });
} catch (e) {
  console.error("screenshot.mjs: " + (e && e.stack ? e.stack : e));
  rc = 1;
} finally {
  await browser.close();
}
process.exit(rc);
