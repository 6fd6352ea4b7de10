// Validates every schemas/examples/<name>.example.json against schemas/json/<name>.schema.json
// with ajv in JSON Schema 2020-12 mode, strict, formats checked (uuid, date, date-time...).
// A prescriber's integrator would do the same with the published files; so does CI.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const root = dirname(fileURLToPath(import.meta.url));
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);

// Optional argument: another folder of examples (tests use it to prove a bad document fails).
const folder = process.argv[2] ?? join(root, "examples");
let failures = 0;
const examples = readdirSync(folder).filter((f) => f.endsWith(".example.json"));
if (examples.length === 0) {
  console.error("no example found");
  process.exit(1);
}
for (const file of examples.sort()) {
  const name = file.replace(/\.example\.json$/, "");
  const schema = JSON.parse(readFileSync(join(root, "json", `${name}.schema.json`), "utf8"));
  const example = JSON.parse(readFileSync(join(folder, file), "utf8"));
  const validate = ajv.compile(schema);
  if (validate(example)) {
    console.log(`ok   ${file}`);
  } else {
    failures += 1;
    console.log(`FAIL ${file}: ${ajv.errorsText(validate.errors)}`);
  }
}
process.exit(failures === 0 ? 0 : 1);
