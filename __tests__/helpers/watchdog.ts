/**
 * If the test process is killed before its cleanup runs, a detached watchdog stops the cluster it
 * started and removes its directories. Returns a function that dismisses the watchdog.
 */
import { spawn } from 'node:child_process';

export function stopOnExit(cluster: { pid: number; baseDir: string }, ...dirs: string[]): () => void {
  const rm = [cluster.baseDir, ...dirs].map((d) => `'${d}'`).join(' ');
  const child = spawn(
    'sh',
    ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 0.5; done; kill -INT ${cluster.pid} 2>/dev/null; sleep 2; kill -KILL ${cluster.pid} 2>/dev/null; rm -rf ${rm}`],
    { detached: true, stdio: 'ignore' },
  );
  child.unref();
  return () => {
    if (child.pid && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
}
