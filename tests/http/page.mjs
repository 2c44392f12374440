// page.mjs - the web page of `imgsearch serve` in headless Chromium
// (Debian's), driven by playwright-core, one check per feature, with a
// screenshot of each state in SHOTDIR:
//   browse (landing view, paging), grid (square cells for portrait and
//   panorama images, srcset thumbnails), bytes (a 24-result page with
//   thumbnails stays under 1.5 MB), viewer (open, metadata, Escape, focus
//   back), more (more like this: the item itself is not in its results),
//   keyboard (Tab reaches cards, visible focus, Enter opens), filter
//   (key=value), minscore (slider), error (a failed search replaces the
//   results), empty (an empty store says how to add images).
// usage: node tests/http/page.mjs URL EMPTY_URL BAD_FILE SHOTDIR
// Prints one line per failed check and "page.mjs: N passed, N failed".
import { launch, tally } from "./chromium.mjs";

const [url, emptyUrl, badFile, shots] = process.argv.slice(2);
if (!url || !emptyUrl || !badFile || !shots) {
  console.log("usage: node page.mjs URL EMPTY_URL BAD_FILE SHOTDIR");
  process.exit(2);
}
const origin = new URL(url).origin;
const { check, finish } = tally("page.mjs");
const wait = (p) => p.catch(() => {}); // a timed-out wait is judged by the check after it

const browser = await launch();
const errors = [];
const foreign = [];
async function open(u) {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    // the bad upload's 415 is logged by Chromium as a failed resource: expected
    if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) errors.push(m.text());
  });
  page.on("request", (r) => {
    const x = r.url();
    if (!x.startsWith(origin) && !x.startsWith(new URL(emptyUrl).origin) && !x.startsWith("blob:") &&
        !x.startsWith("data:")) foreign.push(x);
  });
  await page.goto(u, { waitUntil: "load" });
  return page;
}
const cards = (page) => page.$$eval("#results .card", (cs) => cs.map((c) => ({ id: c.dataset.id, score: Number(c.dataset.score) })));
const thumbsLoaded = () => [...document.querySelectorAll("#results .card img")].every((i) => i.complete && i.naturalWidth > 0);
async function textSearch(page, text) {
  await page.fill("#text", text);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url() === origin + "/search" && r.request().method() === "POST"),
    page.press("#text", "Enter"),
  ]);
  const body = await resp.json().catch(() => null);
  await wait(page.waitForFunction((n) => document.querySelectorAll("#results .card").length === n,
    body && body.results ? body.results.length : -1, { timeout: 15000 }));
  return { resp, body };
}

try {
  // ---- browse: the landing view lists the catalog, page by page ----
  const page = await open(url + "/");
  let healthCalls = 0;
  page.on("request", (r) => { if (r.url() === origin + "/health") healthCalls++; });
  await wait(page.waitForSelector("#results .card", { timeout: 15000 }));
  await wait(page.waitForFunction(() => !document.querySelector("#pager").hidden, null, { timeout: 5000 }));
  const total = await page.evaluate(async () => (await (await fetch("/items?limit=1")).json()).total);
  // a failed file: counted in the status line, and no polling for it
  await wait(page.waitForFunction(() => /1 failed/.test(document.querySelector("#status").textContent), null, { timeout: 5000 }));
  check(/1 failed/.test(await page.$eval("#status", (s) => s.textContent)), "the status line counts the failed file: " + await page.$eval("#status", (s) => s.textContent));
  await page.waitForTimeout(3500);
  check(healthCalls === 0, `the page polled /health ${healthCalls} times with nothing left to embed`);
  let c = await cards(page);
  check(c.length === Math.min(24, total), `the landing view lists ${c.length} of ${total} items`);
  check(/Catalog: items 1.24 of \d+/.test(await page.$eval("#msg", (m) => m.textContent)),
    "the header line says it is the catalog: " + await page.$eval("#msg", (m) => m.textContent));
  await page.selectOption("#k", "12");
  await page.click("#browse");
  await wait(page.waitForFunction(() => document.querySelectorAll("#results .card").length === 12, null, { timeout: 10000 }));
  const p1 = (await cards(page)).map((x) => x.id);
  check(p1.length === 12, `page 1 has ${p1.length} cards`);
  check(await page.$eval("#prev", (b) => b.disabled), "no previous page on page 1");
  await page.click("#next");
  await wait(page.waitForFunction(() => /page 2 of/.test(document.querySelector("#pageinfo").textContent), null, { timeout: 10000 }));
  const p2 = (await cards(page)).map((x) => x.id);
  check(p2.length === Math.min(12, total - 12) && p2.every((id) => !p1.includes(id)),
    `page 2 has other items: ${p2.join(",")}`);
  await page.screenshot({ path: shots + "/browse-page2.png", fullPage: true });
  await page.click("#prev");
  await wait(page.waitForFunction(() => /page 1 of/.test(document.querySelector("#pageinfo").textContent), null, { timeout: 10000 }));
  check(JSON.stringify((await cards(page)).map((x) => x.id)) === JSON.stringify(p1), "previous goes back to page 1");

  // ---- grid: every cell square, portrait and panorama included ----
  await page.selectOption("#k", "48");
  await page.click("#browse");
  await wait(page.waitForFunction((n) => document.querySelectorAll("#results .card").length === n, Math.min(48, total), { timeout: 10000 }));
  await wait(page.waitForFunction(thumbsLoaded, null, { timeout: 20000 }));
  const cells = await page.$$eval("#results .card", (cs) => cs.filter((c) => c.querySelector("img")).map((c) => {
    const t = c.querySelector(".thumb").getBoundingClientRect();
    const img = c.querySelector("img");
    const r = img ? img.getBoundingClientRect() : t;
    return { id: c.dataset.id, w: t.width, h: t.height, iw: r.width, ih: r.height, nat: img ? img.naturalWidth / img.naturalHeight : 1,
      fit: img ? getComputedStyle(img).objectFit : "", srcset: img ? img.getAttribute("srcset") || "" : "", src: img ? img.currentSrc : "" };
  }));
  const wide = cells.find((x) => x.id === "wall.jpg"), tall = cells.find((x) => x.id === "portrait.jpg");
  check(wide && wide.nat > 1.7, "the wallpaper is in the grid as a panorama thumbnail");
  check(tall && tall.nat < 0.6, "the portrait is in the grid as a portrait thumbnail");
  check(cells.every((x) => Math.abs(x.w - x.h) < 1.5 && Math.abs(x.iw - x.w) < 1.5 && Math.abs(x.ih - x.h) < 1.5),
    "every cell is square and its image fills it: " + JSON.stringify(cells.filter((x) => Math.abs(x.w - x.h) >= 1.5 || Math.abs(x.ih - x.h) >= 1.5)));
  check(cells.every((x) => x.fit === "cover"), "thumbnails are cropped with object-fit: cover");
  check(cells.every((x) => /thumb\?size=128 128w/.test(x.srcset) && /size=512 512w/.test(x.srcset)), "every image has a srcset of thumbnails");
  check(cells.every((x) => /\/thumb\?size=\d+$/.test(x.src)), "the grid loads thumbnails, never originals");
  await page.screenshot({ path: shots + "/grid.png", fullPage: true });
  const brokenText = await page.$eval('#results .card[data-id="zz-broken.jpg"]', (c) => c.textContent).catch(() => "");
  check(/failed: .*(decode|truncated|corrupt|JPEG)/i.test(brokenText), "the failed file's card says why: " + brokenText);

  // ---- keyboard: Tab reaches a card, its focus is visible, Enter opens ----
  await page.focus("#browse");
  let reached = false;
  for (let i = 0; i < 40 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement && document.activeElement.classList.contains("card"));
  }
  check(reached, "Tab reaches a result card");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle + " " + getComputedStyle(document.activeElement).outlineWidth);
  check(!/^none/.test(outline) && !/ 0px$/.test(outline), "the focused card shows its focus: " + outline);
  const focusedId = await page.evaluate(() => document.activeElement.dataset.id);
  await page.keyboard.press("Enter");
  await wait(page.waitForFunction(() => !document.querySelector("#viewer").hidden, null, { timeout: 5000 }));
  check(!(await page.$eval("#viewer", (v) => v.hidden)), "Enter on a card opens the viewer");
  await page.keyboard.press("Escape");
  check(await page.$eval("#viewer", (v) => v.hidden), "Escape closes the viewer");
  check(await page.evaluate((id) => document.activeElement.dataset.id === id, focusedId), "the focus goes back to the card");

  await page.selectOption("#k", "24");

  // ---- bytes: a 24-result search with thumbnails, from a fresh page ----
  const fresh = await open("about:blank");
  let bytes = 0;
  const seen = [];
  fresh.on("response", async (r) => {
    try { const b = await r.body(); bytes += b.length; seen.push(r.url() + " " + b.length); } catch (e) { /* redirects have no body */ }
  });
  await fresh.goto(url + "/", { waitUntil: "load" });
  await wait(fresh.waitForSelector("#results .card", { timeout: 15000 }));
  const { body: b24 } = await textSearch(fresh, "a photo");
  await wait(fresh.waitForFunction(thumbsLoaded, null, { timeout: 20000 }));
  await fresh.waitForTimeout(300);
  check(b24 && b24.results.length === Math.min(24, total), `the search answered ${b24 && b24.results.length} results`);
  check(await fresh.evaluate(thumbsLoaded), "all 24 thumbnails loaded");
  check(bytes <= 1.5 * 1024 * 1024, `the page moved ${bytes} bytes (at most 1.5 MB)`);
  check(!seen.some((s) => /\/image /.test(s)), "no original image was loaded for the grid");
  console.log(`page.mjs: a 24-result page with thumbnails moved ${bytes} bytes in ${seen.length} responses`);
  await fresh.screenshot({ path: shots + "/search-24.png", fullPage: true });
  await fresh.close();

  // ---- viewer: the full image with id, source, score and metadata ----
  await textSearch(page, "a photo of a fish");
  check(/results? in [\d.]+ ms for \u201ca photo of a fish\u201d/.test(await page.$eval("#msg", (m) => m.textContent)),
    "the header line says what the results are for: " + await page.$eval("#msg", (m) => m.textContent));
  const first = (await cards(page))[0];
  await page.click("#results .card .thumb");
  await wait(page.waitForFunction(() => /source/.test(document.querySelector("#vdl").textContent), null, { timeout: 5000 }));
  await wait(page.waitForFunction(() => { const i = document.querySelector("#vimg"); return i.complete && i.naturalWidth > 0; }, null, { timeout: 10000 }));
  const v = await page.evaluate(() => ({ id: document.querySelector("#vid").textContent, dl: document.querySelector("#vdl").textContent,
    src: document.querySelector("#vimg").currentSrc, w: document.querySelector("#vimg").naturalWidth }));
  check(v.id === first.id, `the viewer shows ${v.id}, clicked ${first.id}`);
  check(/score/.test(v.dl) && /source/.test(v.dl) && /embedding/.test(v.dl), "the viewer lists score, source, embedding: " + v.dl);
  check(/\/image$/.test(v.src) && v.w > 0, "the viewer shows the full image: " + v.src);
  await page.screenshot({ path: shots + "/viewer.png" });
  await page.keyboard.press("Escape");
  check(await page.$eval("#viewer", (x) => x.hidden), "Escape closes the viewer");
  // a card with metadata shows it
  await page.fill("#text", "");
  await page.selectOption("#k", "48");
  await page.click("#browse");
  await wait(page.waitForSelector('#results .card[data-id="red-1"]', { timeout: 10000 }));
  await page.click('#results .card[data-id="red-1"] .thumb');
  await wait(page.waitForFunction(() => /color/.test(document.querySelector("#vdl").textContent), null, { timeout: 5000 }));
  check(/colorred/.test(await page.$eval("#vdl", (d) => d.textContent)), "the viewer shows the metadata (color=red)");
  await page.keyboard.press("Escape");
  await page.selectOption("#k", "24");

  // ---- more like this ----
  await textSearch(page, "a photo of a fish");
  const target = (await cards(page))[1].id;
  const [moreResp] = await Promise.all([
    page.waitForResponse((r) => r.url() === origin + "/search" && r.request().method() === "POST"),
    page.click(`#results .card[data-id="${target}"] .more`),
  ]);
  const sent = JSON.parse(moreResp.request().postData() || "{}");
  check(sent.id === target, `more like this asks /search with {"id": "${target}"}: ${JSON.stringify(sent)}`);
  const mb = await moreResp.json();
  await wait(page.waitForFunction((n) => document.querySelectorAll("#results .card").length === n, mb.results.length, { timeout: 10000 }));
  const mc = await cards(page);
  check(mc.length > 0 && !mc.some((x) => x.id === target), "more like this lists others, not the item itself");
  check(new RegExp("for items like " + target.replace(/[.]/g, "\\.")).test(await page.$eval("#msg", (m) => m.textContent)),
    "the header line names the item");
  await page.screenshot({ path: shots + "/more-like-this.png", fullPage: true });

  // ---- filter: key=value ----
  await page.fill("#filter", "color=red");
  const { body: fb } = await textSearch(page, "a photo");
  const fc = await cards(page);
  check(fb && fb.results.length === 2 && fb.results.every((h) => h.metadata.color === "red"), "the filter keeps the red items: " + JSON.stringify(fb && fb.results.map((h) => h.id)));
  check(fc.length === 2 && fc.every((x) => /^red-/.test(x.id)), "the grid shows the filtered results");
  check(!(await page.isVisible("#pager")), "search results have no catalog pager");
  check(/with color=red/.test(await page.$eval("#msg", (m) => m.textContent)), "the header line names the filter");
  await page.screenshot({ path: shots + "/filter.png", fullPage: true });
  await page.fill("#filter", "nonsense");
  await page.press("#text", "Enter");
  await wait(page.waitForFunction(() => document.querySelector("#msg").className === "err", null, { timeout: 5000 }));
  check((await cards(page)).length === 0 && /not key=value/.test(await page.$eval("#msg", (m) => m.textContent)), "a filter that is not key=value is an error, with no results");
  await page.fill("#filter", "");

  // ---- min score ----
  const { body: all } = await textSearch(page, "a photo");
  const scores = all.results.map((h) => h.score).sort((a, b) => b - a);
  const cut = Math.floor(((scores[0] + scores[scores.length - 1]) / 2) * 100) / 100;
  const [msResp] = await Promise.all([
    page.waitForResponse((r) => r.url() === origin + "/search" && r.request().method() === "POST"),
    page.evaluate((x) => { const s = document.querySelector("#minscore"); s.value = String(x); s.dispatchEvent(new Event("input")); s.dispatchEvent(new Event("change")); }, cut),
  ]);
  check(JSON.parse(msResp.request().postData() || "{}").min_score === cut, "the slider sends min_score " + cut);
  const msb = await msResp.json();
  await wait(page.waitForFunction((n) => document.querySelectorAll("#results .card").length === n, msb.results.length, { timeout: 10000 }));
  const msc = await cards(page);
  check(msc.length > 0 && msc.length < all.results.length && msc.every((x) => x.score >= cut - 1e-6),
    `min score ${cut}: ${msc.length} of ${all.results.length} results, all above`);
  await page.screenshot({ path: shots + "/min-score.png", fullPage: true });
  await page.evaluate(() => { const s = document.querySelector("#minscore"); s.value = "0"; s.dispatchEvent(new Event("input")); });

  // ---- error: a failed search replaces the results ----
  await textSearch(page, "a photo");
  check((await cards(page)).length > 0, "results before the error");
  const [errResp] = await Promise.all([
    page.waitForResponse((r) => r.url() === origin + "/search" && r.request().method() === "POST"),
    page.setInputFiles("#file", badFile),
  ]);
  check(errResp.status() >= 400, "a text file as the query image is refused: " + errResp.status());
  await wait(page.waitForFunction(() => document.querySelector("#msg").className === "err", null, { timeout: 5000 }));
  check((await cards(page)).length === 0, "the error replaced the old results");
  check(/unsupported_format|not an image|decode/i.test(await page.$eval("#msg", (m) => m.textContent)), "the error says why: " + await page.$eval("#msg", (m) => m.textContent));
  await page.screenshot({ path: shots + "/error.png", fullPage: true });
  await page.close();

  // ---- empty store ----
  const ep = await open(emptyUrl + "/");
  await wait(ep.waitForFunction(() => !document.querySelector("#empty").hidden, null, { timeout: 15000 }));
  const et = await ep.$eval("#empty", (e) => (e.hidden ? "" : e.textContent));
  check(/--catalog/.test(et) && /imgsearch index/.test(et) && /PUT/.test(et), "the empty state tells how to add images: " + et.slice(0, 80));
  check((await cards(ep)).length === 0, "no cards in an empty store");
  check(!(await ep.isVisible("#pager")), "no pager in an empty store");
  await ep.screenshot({ path: shots + "/empty.png", fullPage: true });
  await ep.close();

  check(foreign.length === 0, "requests left the server: " + foreign.join(" "));
  check(errors.length === 0, "page errors: " + errors.join("; "));
} catch (e) {
  check(false, "exception: " + (e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
finish();
