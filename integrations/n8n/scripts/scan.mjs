// n8n's community-package scanner on what `npm pack` ships, offline. Its command line
// (`npx @n8n/scan-community-package NAME`) takes published packages only: it fetches the
// tarball and the provenance-attested source from the registry and GitHub. This runs the
// same lint stage (`analyzePackage`, the same rules) on the local tarball, unpacked.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { analyzePackage } from '@n8n/scan-community-package/scanner/scanner.mjs';

const here = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'n8n-scan-'));
try {
  const packed = spawnSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: here, encoding: 'utf8' });
  if (packed.status !== 0) throw new Error(`npm pack failed: ${packed.stderr}`);
  const tarball = path.join(work, packed.stdout.trim().split('\n').pop());
  const dir = path.join(work, 'package');
  const untar = spawnSync('tar', ['-xzf', tarball, '-C', work]);
  if (untar.status !== 0) throw new Error(`tar failed: ${untar.stderr}`);
  // Both of the scanner's legs: every shipped file, then the published-artifact patterns.
  for (const patterns of [undefined, ['**/*.js', 'package.json']]) {
    const result = await analyzePackage(dir, patterns);
    if (!result.passed) {
      console.log(`FAILED: ${result.message}\n${result.details ?? ''}`);
      process.exit(1);
    }
  }
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => !fs.statSync(path.join(dir, f)).isDirectory());
  console.log(`n8n community-package scan passed: ${path.basename(tarball)} (${files.length} files)`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
