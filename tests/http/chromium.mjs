// chromium.mjs - what the browser tests (browser.mjs, page.mjs,
// cors_browser.mjs) share: Debian's Chromium started headless through
// playwright-core ($CHROMIUM overrides the path), and the tally of checks
// each prints as "NAME: N passed, N failed" before exiting 1 on a failure.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

export function tally(name) {
  let passed = 0;
  let failed = 0;
  return {
    check(cond, what) {
      if (cond) passed++;
      else {
        failed++;
        console.log(`FAIL ${name}: ${what}`);
      }
    },
    finish() {
      console.log(`${name}: ${passed} passed, ${failed} failed`);
      process.exit(failed ? 1 : 0);
    },
  };
}
