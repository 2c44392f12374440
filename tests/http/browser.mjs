// browser.mjs - the search page of `imgsearch serve` in real headless
// Chromium (Debian's /usr/bin/chromium), driven by playwright-core:
// upload a fixture image through the file input and expect it first in the
// result grid with its thumbnail loaded; type a text and expect results;
// no request leaves the server's origin and the page logs no error.
//
// usage: node tests/http/browser.mjs URL IMAGE_FILE EXPECTED_ID SCREENSHOT.png
// Prints one line per failed check and "browser.mjs: N passed, N failed".
import { launch, tally } from "./chromium.mjs";

const [url, image, expectId, shot] = process.argv.slice(2);
if (!url || !image || !expectId || !shot) {
  console.log("usage: node browser.mjs URL IMAGE_FILE EXPECTED_ID SCREENSHOT.png");
  process.exit(2);
}
const origin = new URL(url).origin;
const { check, finish } = tally("browser.mjs");

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 860 } });
  const errors = [];
  const foreign = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("blob:") && !u.startsWith("data:")) foreign.push(u);
  });
  await page.goto(url, { waitUntil: "load" });
  check((await page.title()) === "imgsearch", "the page title");
  // a wait that times out is not an exception here: the check after it fails
  await page.waitForFunction(() => /items/.test(document.querySelector("#status").textContent),
    null, { timeout: 15000 }).catch(() => {});
  const status = await page.$eval("#status", (s) => s.textContent);
  check(/\d+ items/.test(status), `the status line shows the store: "${status}"`);

  // 1. an image through the file input
  const [imgResp] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(origin + "/search") && r.request().method() === "POST"),
    page.setInputFiles("#file", image),
  ]);
  check(imgResp.status() === 200, "image search answered " + imgResp.status());
  check(/^multipart\/form-data/.test(imgResp.request().headers()["content-type"] || ""),
    "the image went as multipart/form-data");
  await page.waitForSelector("#results .card", { timeout: 15000 });
  const first = await page.$eval("#results .card", (c) => ({ id: c.dataset.id, score: Number(c.dataset.score) }));
  check(first.id === expectId, `the first result is ${first.id}, wanted ${expectId}`);
  check(first.score >= 0.999, `the first score is ${first.score}`);
  const cards = await page.$$eval("#results .card", (cs) => cs.length);
  check(cards >= 2, `${cards} result cards`);
  const thumbLoaded = () => {
    const img = document.querySelector("#results .card img");
    return !!(img && img.complete && img.naturalWidth > 0);
  };
  await page.waitForFunction(thumbLoaded, null, { timeout: 15000 }).catch(() => {});
  check(await page.evaluate(thumbLoaded), "the first thumbnail loaded");
  check(await page.$eval("#preview", (p) => !p.hidden), "the query image is previewed");
  check(/results? in/.test(await page.$eval("#msg", (m) => m.textContent)), "the result count is shown");
  await page.screenshot({ path: shot, fullPage: true });

  // 2. a text query
  await page.fill("#text", "a photo of a cat");
  const [textResp] = await Promise.all([
    page.waitForResponse((r) => r.url() === origin + "/search" && r.request().method() === "POST"),
    page.press("#text", "Enter"),
  ]);
  check(textResp.status() === 200, "text search answered " + textResp.status());
  check(textResp.request().headers()["content-type"] === "application/json", "the text went as JSON");
  const body = await textResp.json();
  await page.waitForFunction((n) => document.querySelectorAll("#results .card").length === n,
    body.results.length, { timeout: 15000 });
  const textCards = await page.$$eval("#results .card", (cs) => cs.map((c) => c.dataset.id));
  check(textCards.length > 0, "text results appear");
  check(textCards[0] === body.results[0].id, "the grid follows the text answer");

  check(foreign.length === 0, "requests left the server: " + foreign.join(" "));
  check(errors.length === 0, "page errors: " + errors.join("; "));
} catch (e) {
  check(false, "exception: " + (e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
finish();
