import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDockerfile } from './dockerfile.ts';

describe('parseDockerfile', () => {
  it('parses the common subset into template build steps', () => {
    const df = `
# a comment
ARG GREETING=hello
FROM base
ARG VERSION=1
ENV APP_HOME=/srv/app \\
    MODE="two words"
RUN apt-get update && \\
    echo $GREETING
RUN ["echo", "exec form", "$x"]
COPY --chown=user --chmod=0644 ./app.py $APP_HOME/
ADD a.txt b.txt /opt/
WORKDIR $APP_HOME
USER user:user
ENTRYPOINT ["python3"]
CMD ["-m", "http.server", "8000"]
`;
    assert.deepEqual(parseDockerfile(df, { VERSION: '2' }), {
      from: 'base',
      steps: [
        { type: 'USER', args: ['root'] },
        { type: 'ENV', args: ['APP_HOME', '/srv/app', 'MODE', 'two words'] },
        { type: 'RUN', args: ['export VERSION=2; apt-get update &&  echo $GREETING'] },
        { type: 'RUN', args: [`export VERSION=2; echo 'exec form' '$x'`] },
        { type: 'COPY', src: 'app.py', dest: '/srv/app/', user: 'user', mode: '0644' },
        { type: 'COPY', src: 'a.txt', dest: '/opt/' },
        { type: 'COPY', src: 'b.txt', dest: '/opt/' },
        { type: 'WORKDIR', args: ['/srv/app'] },
        { type: 'USER', args: ['user'] },
      ],
      startCmd: 'python3 -m http.server 8000',
    });
  });

  it('without USER or WORKDIR the sandboxes get user and /home/user (as E2B), not the root of the steps', () => {
    assert.deepEqual(parseDockerfile('FROM base\nRUN make').steps, [
      { type: 'USER', args: ['root'] },
      { type: 'RUN', args: ['make'] },
      { type: 'USER', args: ['user'] },
      { type: 'WORKDIR', args: ['/home/user'] },
    ]);
    assert.deepEqual(parseDockerfile('FROM base\nUSER root\nWORKDIR /srv').steps.slice(1), [
      { type: 'USER', args: ['root'] },
      { type: 'WORKDIR', args: ['/srv'] },
    ]);
  });

  it('CMD alone, shell form, is the start command', () => {
    assert.equal(parseDockerfile('FROM base\nCMD node server.js').startCmd, 'node server.js');
    assert.equal(parseDockerfile('FROM base').startCmd, undefined);
  });

  it('refuses what it does not build, by name and line', () => {
    const bad: [string, RegExp][] = [
      ['FROM base\nEXPOSE 80', /Dockerfile line 2 \(EXPOSE\): EXPOSE is not supported/],
      ['FROM base\n\nHEALTHCHECK CMD true', /line 3 \(HEALTHCHECK\)/],
      ['FROM base\nFOO bar', /unknown instruction FOO/],
      ['RUN x\nFROM base', /line 1 \(RUN\): comes before FROM/],
      ['FROM a\nFROM b', /multi-stage builds are not supported/],
      ['FROM base\nCOPY http://x/y /y', /remote sources/],
      ['FROM base\nCOPY *.txt /y', /wildcards/],
      ['FROM base\nCOPY --from=build /a /b', /flag --from=build is not supported/],
      ['FROM base\nRUN --mount=type=cache echo', /RUN flags/],
      ['FROM base\nCOPY onlyone', /needs a source and a destination/],
      ['FROM base\nCMD ["x", 1]', /exec form must be an array of strings/],
      ['# nothing', /has no FROM/],
    ];
    for (const [df, re] of bad) assert.throws(() => parseDockerfile(df), re, df);
  });
});
