/** Entry of the detached reaper process: `node reaper-main.js <manifestPath>`. */
import { reaperMain } from './reaper';

void reaperMain(process.argv[2]);
