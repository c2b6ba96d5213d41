// Runs every server suite with node's test runner:
//   node tests/server/run_all.mjs --vortex build/vortex --source .
// On the GPU machine (scripts/gpu-check --server): add --serve-args "--device cuda".
// Each suite starts its own `vortex serve` on a free 127.0.0.1 port and stops it.
import './e2e.test.mjs';
import './bad_input.test.mjs';
import './load.test.mjs';
import './disconnect.test.mjs';
import './drain.test.mjs';
import './random_weights.test.mjs';
import './soak.test.mjs';
