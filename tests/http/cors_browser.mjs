// cors_browser.mjs - CORS as a browser applies it: a page of one origin
// (PAGE_URL, served by a static server of the test) calls POST /search of
// `imgsearch serve` on another origin, in headless Chromium (Debian's,
// driven by playwright-core). The page's own script does the fetch (JSON
// body, so Chromium sends a preflight first) and writes what happened into
// #out; this script reads it.
//   ALLOWED: a server whose --cors-origin names the page's origin: the fetch
//            succeeds, returns results, and X-Request-ID is readable.
//   BLOCKED...: servers that do not allow it: the fetch throws (TypeError).
//
// usage: node tests/http/cors_browser.mjs PAGE_URL ALLOWED_API BLOCKED_API...
// Prints one line per failed check and "cors_browser.mjs: N passed, N failed".
import { launch, tally } from "./chromium.mjs";

const [pageUrl, allowed, ...blocked] = process.argv.slice(2);
if (!pageUrl || !allowed || blocked.length === 0) {
  console.log("usage: node cors_browser.mjs PAGE_URL ALLOWED_API BLOCKED_API...");
  process.exit(2);
}
const { check, finish } = tally("cors_browser.mjs");

const browser = await launch();
// run(api): opens the page with ?api=API and returns what its script wrote
async function run(api) {
  const page = await browser.newPage();
  const u = new URL(pageUrl);
  u.searchParams.set("api", api);
  await page.goto(u.href, { waitUntil: "load" });
  await page.waitForFunction(() => document.querySelector("#out").textContent !== "",
    null, { timeout: 20000 }).catch(() => {});
  const text = await page.$eval("#out", (o) => o.textContent);
  const origin = await page.evaluate(() => location.origin);
  await page.close();
  try {
    return { origin, ...JSON.parse(text) };
  } catch {
    return { origin, outcome: "unreadable", text };
  }
}

try {
  check(new URL(pageUrl).origin !== new URL(allowed).origin, "the page and the API share an origin");
  const ok = await run(allowed);
  check(ok.outcome === "ok", `the allowed origin's fetch: ${JSON.stringify(ok)}`);
  check(ok.status === 200, `the allowed origin's fetch answered ${ok.status}`);
  check(ok.results > 0, `the allowed origin's fetch returned ${ok.results} results`);
  check(typeof ok.requestId === "string" && ok.requestId.length > 0,
    `X-Request-ID is exposed to the page: ${ok.requestId}`);
  for (const api of blocked) {
    const no = await run(api);
    check(no.outcome === "threw", `a server not allowing ${no.origin}: the fetch was not blocked: ${JSON.stringify(no)}`);
    check(no.error === "TypeError", `the blocked fetch threw ${no.error}, wanted TypeError`);
  }
} catch (e) {
  check(false, "exception: " + (e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
finish();
