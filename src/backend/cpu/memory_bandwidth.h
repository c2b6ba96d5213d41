// The CPU's memory roofline: what `vortex bench decode --device cpu` relates a step's bytes to.
#pragma once

namespace vortex::cpu {

// Best-of-several read bandwidth of main memory over a buffer far larger than the caches, in GB/s,
// with all OpenMP threads (the same threads the decode step uses).
double measure_read_bandwidth_gbps();

}  // namespace vortex::cpu
