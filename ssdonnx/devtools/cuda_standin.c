/* Stand-in CUDA functions for ssdonnx's simulated CUDA placement (ssdonnx/cudastub.py).
 *
 * Compiled into one small library per CUDA, cuDNN or TensorRT library that onnxruntime's
 * CUDA provider needs and this machine lacks. Every function the provider imports exists;
 * the ones below behave like one device of compute capability 9.0 whose memory is host
 * memory, which is all that creating a session reads. Everything else returns success
 * (0) and does nothing: no kernel ever runs, so a session on these libraries may be
 * created and asked where it placed each node, and must never be run.
 */
#include <stdlib.h>
#include <string.h>

/* cudaDeviceProp up to `minor`: the same layout from CUDA 11 to CUDA 13 (13 turned
 * `clockRate` into padding). Only this prefix is written. */
struct device_prop_prefix {
    char name[256];
    unsigned char uuid[16];
    char luid[8];
    unsigned int luidDeviceNodeMask;
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    int regsPerBlock;
    int warpSize;
    size_t memPitch;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int clockRate;
    size_t totalConstMem;
    int major;
    int minor;
};

#define DEVICE_MEMORY (80UL << 30)

static void *new_handle(void) { return calloc(1, 256); }

int cudaGetDeviceCount(int *count) { *count = 1; return 0; }
int cudaGetDevice(int *device) { *device = 0; return 0; }

int cudaGetDeviceProperties(struct device_prop_prefix *p, int device) {
    memset(p, 0, sizeof *p);
    strcpy(p->name, "ssdonnx stand-in (no GPU)");
    p->totalGlobalMem = DEVICE_MEMORY;
    p->sharedMemPerBlock = 48 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->totalConstMem = 64 << 10;
    p->major = 9;
    p->minor = 0;
    return 0;
}

int cudaDeviceGetAttribute(int *value, int attribute, int device) {
    switch (attribute) {   /* cudaDeviceAttr values, stable across CUDA versions */
    case 1: *value = 1024; break;         /* max threads per block */
    case 8: *value = 48 << 10; break;     /* shared memory per block */
    case 10: *value = 32; break;          /* warp size */
    case 16: *value = 132; break;         /* multiprocessors */
    case 75: *value = 9; break;           /* compute capability, major */
    case 76: *value = 0; break;           /* compute capability, minor */
    case 97: *value = 227 << 10; break;   /* opt-in shared memory per block */
    default: *value = 1;
    }
    return 0;
}

int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = DEVICE_MEMORY;
    return 0;
}

int cudaMalloc(void **p, size_t n) { *p = malloc(n ? n : 1); return *p ? 0 : 2; }
int cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
int cudaHostAlloc(void **p, size_t n, unsigned flags) { return cudaMalloc(p, n); }
int cudaMallocAsync(void **p, size_t n, void *stream) { return cudaMalloc(p, n); }
int cudaMallocFromPoolAsync(void **p, size_t n, void *pool, void *stream) {
    return cudaMalloc(p, n);
}
int cudaFree(void *p) { free(p); return 0; }
int cudaFreeHost(void *p) { free(p); return 0; }
int cudaFreeAsync(void *p, void *stream) { free(p); return 0; }

int cudaMemcpy(void *dst, const void *src, size_t n, int kind) {
    memcpy(dst, src, n);
    return 0;
}
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    memcpy(dst, src, n);
    return 0;
}
int cudaMemset(void *dst, int value, size_t n) { memset(dst, value, n); return 0; }
int cudaMemsetAsync(void *dst, int value, size_t n, void *stream) {
    memset(dst, value, n);
    return 0;
}

int cudaDriverGetVersion(int *version) { *version = 13000; return 0; }
int cudaRuntimeGetVersion(int *version) { *version = 13000; return 0; }

int cudaStreamCreate(void **stream) { *stream = new_handle(); return 0; }
int cudaStreamCreateWithFlags(void **stream, unsigned flags) {
    *stream = new_handle();
    return 0;
}
int cudaStreamCreateWithPriority(void **stream, unsigned flags, int priority) {
    *stream = new_handle();
    return 0;
}
int cudaEventCreate(void **event) { *event = new_handle(); return 0; }
int cudaEventCreateWithFlags(void **event, unsigned flags) {
    *event = new_handle();
    return 0;
}
int cudaStreamIsCapturing(void *stream, int *status) { *status = 0; return 0; }

int cublasCreate_v2(void **handle) { *handle = new_handle(); return 0; }
int cublasLtCreate(void **handle) { *handle = new_handle(); return 0; }
int cudnnCreate(void **handle) { *handle = new_handle(); return 0; }
size_t cudnnGetVersion(void) { return 90000; }

const char *cudaGetErrorString(int error) { return "error in a stand-in CUDA library"; }
const char *cudaGetErrorName(int error) { return "cudaErrorStandIn"; }
const char *cublasGetStatusString(int status) { return "error in a stand-in cuBLAS library"; }
const char *cublasGetStatusName(int status) { return "CUBLAS_STATUS_STAND_IN"; }
const char *cudnnGetErrorString(int status) { return "error in a stand-in cuDNN library"; }

/* Called by the provider's static initialisers for its device code. */
static void *fat_binary_handle[64];
void **__cudaRegisterFatBinary(void *fat_binary) { return fat_binary_handle; }
