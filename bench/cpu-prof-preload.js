'use strict';
/**
 * `NODE_OPTIONS=--require bench/cpu-prof-preload.js BENCH_PROFILE_DIR=dir`: what `--cpu-prof`
 * does (Node refuses that flag in NODE_OPTIONS), for every node process of a run: the V8
 * sampler from start to exit, written as <dir>/<role>-<pid>.cpuprofile. Used by bench/profile.js.
 */
const dir = process.env.BENCH_PROFILE_DIR;
if (dir) {
  const fs = require('fs');
  const path = require('path');
  const inspector = require('inspector');
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.start');
  const role = process.argv.some((a) => a.includes('jest-worker') || a.includes('processChild')) ? 'worker' : process.argv.some((a) => a.includes('reaper')) ? 'reaper' : 'main';
  const write = () => {
    // Same-thread inspector sessions answer synchronously: safe in an 'exit' handler.
    session.post('Profiler.stop', (err, res) => {
      if (err || !res) return;
      const cpu = process.cpuUsage();
      const file = path.join(dir, `${role}-${process.pid}.cpuprofile`);
      fs.writeFileSync(file, JSON.stringify(res.profile));
      fs.writeFileSync(file + '.cpu.json', JSON.stringify({ role, pid: process.pid, argv: process.argv.slice(1, 3), userMs: cpu.user / 1000, systemMs: cpu.system / 1000 }));
    });
  };
  process.once('exit', write);
}
