// openapi_check.mjs FILE: validates FILE (an OpenAPI document) against the
// OpenAPI schema of its version with @seriousme/openapi-schema-validator
// (package-lock.json); prints "valid" or the errors, exits 0 or 1.
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
const res = await new Validator().validate(doc);
if (res.valid) {
  console.log(`valid OpenAPI ${doc.openapi}`);
} else {
  console.log(JSON.stringify(res.errors, null, 1).slice(0, 3000));
  process.exit(1);
}
