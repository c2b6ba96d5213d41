// VX_HOST_DEVICE: a function written once for the host and the device (nvcc compiles it for both;
// the host compiler sees a plain inline function).
#pragma once

#ifdef __CUDACC__
#define VX_HOST_DEVICE __host__ __device__
#else
#define VX_HOST_DEVICE
#endif
