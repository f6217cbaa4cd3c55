#!/usr/bin/env node
// portok's npm launcher: finds the binary in the package for this platform (an optional
// dependency; npm installs only the one whose os and cpu match) and runs it with the same
// arguments, exit code and signals. No install scripts: nothing runs at install time.
"use strict";
const { spawn } = require("child_process");
const os = require("os");
const path = require("path");
const platforms = require("../platforms.json");

const key = `${process.platform}-${process.arch}`;

function binary() {
  const p = platforms[key];
  if (!p) return null;
  try {
    const dir = path.dirname(require.resolve(`portok-${key}/package.json`));
    return path.join(dir, "bin", p.exe);
  } catch (e) {
    return null;
  }
}

const bin = binary();
if (!bin) {
  const have = Object.keys(platforms).join(", ");
  console.error(
    `portok: no portok binary for ${key} here: the package portok-${key} is not installed.\n` +
      `  portok ships for ${have}; on one of those, install again without --no-optional ` +
      `(npm install -g portok).\n` +
      `  Anywhere else, build it from source with Rust: cargo install portok`
  );
  process.exit(1);
}

const child = spawn(bin, process.argv.slice(2), { stdio: "inherit" });
// The child is in our process group, so a terminal's Ctrl-C reaches it directly; a signal
// sent to this process alone (kill PID) is passed on.
const forward = (sig) => () => child.kill(sig);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]) {
  process.on(sig, forward(sig));
}
child.on("error", (e) => {
  console.error(`portok: could not run ${bin}: ${e.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  if (signal) {
    // Die of the same signal, so a caller sees what the binary's caller would.
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    // A signal node ignores (SIGPIPE) did not end us: exit as a shell reports it.
    process.exit(128 + (os.constants.signals[signal] || 0));
  }
  process.exit(code === null ? 1 : code);
});
