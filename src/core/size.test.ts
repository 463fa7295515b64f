import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from './errors.ts';
import { formatMiB, parseSize, parseSizeMiB } from './size.ts';

const refused = (f: () => unknown, re: RegExp): void => {
  assert.throws(
    f,
    (e: unknown) => e instanceof KilnError && e.code === 'invalid_argument' && re.test(e.message),
  );
};

describe('parseSize', () => {
  it('takes units, binary, any case, with or without iB', () => {
    assert.equal(parseSize('disk', '20G'), 20 * 2 ** 30);
    assert.equal(parseSize('m', '512M'), 512 * 2 ** 20);
    assert.equal(parseSize('m', '1GiB'), 2 ** 30);
    assert.equal(parseSize('m', '1gb'), 2 ** 30);
    assert.equal(parseSize('m', '4k'), 4096);
    assert.equal(parseSize('m', '1.5G'), 1.5 * 2 ** 30);
    assert.equal(parseSize('m', '100'), 100);
    assert.equal(parseSize('m', '100B'), 100);
    assert.equal(parseSize('m', '2T'), 2 * 2 ** 40);
  });
  it('reads a bare number in the default unit', () => {
    assert.equal(parseSize('memory', '512', 'M'), 512 * 2 ** 20);
    assert.equal(parseSizeMiB('memory', '1G'), 1024);
    assert.equal(parseSizeMiB('memory', '768'), 768);
  });
  it('refuses bad input with the field and what to write', () => {
    refused(() => parseSize('memory', ''), /memory.*not a size/);
    refused(() => parseSize('memory', '-1G'), /not a size/);
    refused(() => parseSize('memory', '1X'), /unknown unit "X"/);
    refused(() => parseSize('memory', '1 G B'), /not a size/);
    refused(() => parseSize('memory', '0M'), /zero/);
    refused(() => parseSize('memory', '0.3'), /whole number of bytes/);
    refused(() => parseSizeMiB('memory', '1.5M'), /whole number of MiB/);
    refused(() => parseSizeMiB('memory', '100K'), /whole number of MiB/);
  });
  it('checks a range in MiB, said in the units people type', () => {
    const range = { min: 512, max: 262144 };
    assert.equal(parseSizeMiB('disk', '20G', range), 20480);
    assert.equal(parseSizeMiB('disk', '512', range), 512);
    assert.equal(parseSizeMiB('disk', '256G', range), 262144);
    refused(() => parseSizeMiB('disk', '511M', range), /disk: "511M" is 511M: it must be from 512M to 256G/);
    refused(() => parseSizeMiB('disk', '1T', range), /"1T" is 1024G: it must be from 512M to 256G/);
    assert.equal(formatMiB(1536), '1536M');
    assert.equal(formatMiB(2048), '2G');
  });
});
