// Compares two result sets of `conformance server -o DIR`: the MCP server
// reached directly and through Mandate's gateway, scenario by scenario.
//
//   node compare.mjs DIRECT_DIR DIRECT_LOG GATEWAY_DIR GATEWAY_LOG
//
// A scenario's outcome is the status of each of its graded checks (SUCCESS,
// FAILURE, WARNING; INFO checks are request/event logs and are not compared).
// Exit 0 when every scenario has the same outcome in both runs, 1 with a diff
// otherwise, 2 when the results cannot be read. Failures that occur identically
// in both runs are listed but do not fail the comparison: they are the
// server's (or the suite's), not the gateway's.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const GRADED = new Set(['SUCCESS', 'FAILURE', 'WARNING']);
const DIR_NAME = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;
const SUMMARY_LINE = /^[✓✗] (\S+): \d+ passed, \d+ failed/;

function load(dir, log) {
  const scenarios = new Map();
  if (existsSync(dir)) {
    for (const entry of readdirSync(dir).sort()) {
      const m = DIR_NAME.exec(entry);
      const file = join(dir, entry, 'checks.json');
      if (!m || !existsSync(file)) continue;
      scenarios.set(m[1], JSON.parse(readFileSync(file, 'utf8')));
    }
  }
  // A scenario that threw is in the summary but has no checks.json.
  const listed = [];
  if (existsSync(log)) {
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      const m = SUMMARY_LINE.exec(line.trim());
      if (m) listed.push(m[1]);
    }
  }
  return { scenarios, listed };
}

// id -> [statuses] of the graded checks, plus the checks themselves by id.
function outcome(checks) {
  const byId = new Map();
  for (const c of checks ?? []) {
    if (!GRADED.has(c.status)) continue;
    if (!byId.has(c.id)) byId.set(c.id, []);
    byId.get(c.id).push(c);
  }
  return byId;
}

function counts(run, names) {
  let passed = 0, failed = 0, warnings = 0, scenariosOk = 0, notRun = 0;
  for (const name of names) {
    const checks = run.scenarios.get(name);
    if (!checks) {
      notRun++;
      continue;
    }
    const graded = checks.filter((c) => GRADED.has(c.status));
    passed += graded.filter((c) => c.status === 'SUCCESS').length;
    const f = graded.filter((c) => c.status === 'FAILURE').length;
    failed += f;
    warnings += graded.filter((c) => c.status === 'WARNING').length;
    if (f === 0) scenariosOk++;
  }
  return { passed, failed, warnings, scenariosOk, notRun };
}

const brief = (v, max = 1500) => {
  if (v === undefined) return '(none)';
  const s = JSON.stringify(v, null, 2);
  return s.length > max ? `${s.slice(0, max)}\n… (${s.length - max} more characters)` : s;
};

function describe(c) {
  if (!c) return 'absent';
  return c.status + (c.errorMessage ? ` — ${c.errorMessage}` : '');
}

const [directDir, directLog, gatewayDir, gatewayLog] = process.argv.slice(2);
if (!gatewayLog) {
  console.error('usage: node compare.mjs DIRECT_DIR DIRECT_LOG GATEWAY_DIR GATEWAY_LOG');
  process.exit(2);
}
const direct = load(directDir, directLog);
const gateway = load(gatewayDir, gatewayLog);
const names = [...new Set([...direct.listed, ...direct.scenarios.keys(), ...gateway.listed, ...gateway.scenarios.keys()])];
if (names.length === 0) {
  console.error('no conformance results found: did the suite run at all? (see the logs)');
  process.exit(2);
}

for (const [label, run] of [['direct ', direct], ['gateway', gateway]]) {
  const c = counts(run, names);
  console.log(
    `${label}: ${names.length} scenarios, ${c.scenariosOk} without failures` +
      `${c.notRun ? `, ${c.notRun} not run` : ''}; checks: ${c.passed} passed, ${c.failed} failed, ${c.warnings} warnings`,
  );
}

const differences = [];
const sameFailures = [];
for (const name of names) {
  const d = direct.scenarios.get(name);
  const g = gateway.scenarios.get(name);
  if (!d || !g) {
    if (d || g) {
      differences.push(
        `${name}: no result ${d ? 'through the gateway' : 'directly'} (the scenario threw, or the run timed out; see ${d ? 'gateway' : 'direct'}.log)`,
      );
    } else {
      sameFailures.push(`${name}: did not run in either run (see the logs)`);
    }
    continue;
  }
  const od = outcome(d);
  const og = outcome(g);
  for (const id of new Set([...od.keys(), ...og.keys()])) {
    const a = od.get(id) ?? [];
    const b = og.get(id) ?? [];
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) {
      if (a[i]?.status === b[i]?.status) {
        if (a[i].status !== 'SUCCESS') {
          sameFailures.push(`${name} / ${id}: ${describe(a[i])}${a[i].errorMessage !== b[i].errorMessage ? ` | gateway: ${b[i].errorMessage}` : ''}`);
        }
        continue;
      }
      differences.push(
        `${name} / ${id}\n` +
          `    direct : ${describe(a[i])}\n` +
          `    gateway: ${describe(b[i])}\n` +
          `    direct details : ${brief(a[i]?.details).replace(/\n/g, '\n      ')}\n` +
          `    gateway details: ${brief(b[i]?.details).replace(/\n/g, '\n      ')}`,
      );
    }
  }
}

if (sameFailures.length) {
  console.log(`\nIdentical in both runs, not counted against the gateway (${sameFailures.length}):`);
  for (const s of sameFailures) console.log(`  - ${s}`);
}
if (differences.length) {
  const scenarios = [...new Set(differences.map((d) => d.split(/[ :]/)[0]))];
  console.log(`\nDIFFERENCES between the direct and the gateway run, in ${scenarios.length} scenarios: ${scenarios.join(', ')}`);
  for (const s of differences) console.log(`  - ${s}`);
  console.log(`\nconformance: ${names.length - scenarios.length} passed, ${scenarios.length} failed`);
  process.exit(1);
}
console.log(`\nEvery scenario has the same outcome directly and through the gateway.`);
console.log(`conformance: ${names.length} passed, 0 failed`);
