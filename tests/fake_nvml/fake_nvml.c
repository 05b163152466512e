/*
 * A fake libnvidia-ml.so.1 for cellhop's tests: the unmodified pynvml loads it
 * (CDLL("libnvidia-ml.so.1")) when its folder is on LD_LIBRARY_PATH.
 *
 * Build:  gcc -shared -fPIC -o DIR/libnvidia-ml.so.1 fake_nvml.c
 *
 * Configured by environment variables, read at each successful init:
 *   FAKE_NVML_MODE     ok (default) | driver_not_loaded | no_permission |
 *                      lib_rm_version_mismatch | unknown: what nvmlInit returns
 *   FAKE_NVML_DEVICES  "name:memory MiB:mig[:flags];..." e.g.
 *                      "NVIDIA H100 80GB HBM3:81559:0;NVIDIA A100-SXM4-40GB:40960:1:nopower"
 *                      mig is 0, 1 or "na" (not supported); flags, joined by '+':
 *                      nopower, notemp, noutil, noprocs, nominor (that query is NOT_SUPPORTED)
 *   FAKE_NVML_DRIVER   driver version string (default "550.54.15")
 *
 * Deterministic readings for device i: utilization 40+i %, memory used (i+1) GiB,
 * power 250000+1000*i mW, temperature 50+i C, minor number (/dev/nvidiaN) 7+i;
 * device 0 runs pid 4242 using 1 GiB.
 * fake_nvml_refcount() and fake_nvml_init_calls() let tests check init/shutdown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    OK = 0, E_UNINITIALIZED = 1, E_INVALID_ARGUMENT = 2, E_NOT_SUPPORTED = 3,
    E_NO_PERMISSION = 4, E_NOT_FOUND = 6, E_INSUFFICIENT_SIZE = 7,
    E_DRIVER_NOT_LOADED = 9, E_LIB_RM_VERSION_MISMATCH = 18,
    E_ARGUMENT_VERSION_MISMATCH = 25, E_UNKNOWN = 999
};

#define MAX_DEVICES 16
#define MIB (1024ULL * 1024ULL)
#define GIB (1024ULL * MIB)

typedef struct {
    char name[96];
    char uuid[96];
    unsigned long long memory_total;
    int mig; /* 0, 1, or -1: not supported */
    int no_power, no_temp, no_util, no_procs, no_minor;
} fake_device;

typedef fake_device *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

static fake_device devices[MAX_DEVICES];
static unsigned int device_count = 0;
static int refcount = 0;
static int init_calls = 0;

int fake_nvml_refcount(void) { return refcount; }
int fake_nvml_init_calls(void) { return init_calls; }

static void parse_device(char *spec, fake_device *d, unsigned int index) {
    char *save = NULL;
    char *name = strtok_r(spec, ":", &save);
    char *mem = strtok_r(NULL, ":", &save);
    char *mig = strtok_r(NULL, ":", &save);
    char *flags = strtok_r(NULL, ":", &save);
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name ? name : "NVIDIA Fake GPU");
    snprintf(d->uuid, sizeof d->uuid, "GPU-fa4e0000-0000-0000-0000-%012u", index);
    d->memory_total = (mem ? strtoull(mem, NULL, 10) : 16384ULL) * MIB;
    d->mig = !mig ? 0 : (strcmp(mig, "na") == 0 ? -1 : atoi(mig) != 0);
    if (flags) {
        d->no_power = strstr(flags, "nopower") != NULL;
        d->no_temp = strstr(flags, "notemp") != NULL;
        d->no_util = strstr(flags, "noutil") != NULL;
        d->no_procs = strstr(flags, "noprocs") != NULL;
        d->no_minor = strstr(flags, "nominor") != NULL;
    }
}

static nvmlReturn_t load_config(void) {
    const char *mode = getenv("FAKE_NVML_MODE");
    if (mode && *mode && strcmp(mode, "ok") != 0) {
        if (strcmp(mode, "driver_not_loaded") == 0) return E_DRIVER_NOT_LOADED;
        if (strcmp(mode, "no_permission") == 0) return E_NO_PERMISSION;
        if (strcmp(mode, "lib_rm_version_mismatch") == 0) return E_LIB_RM_VERSION_MISMATCH;
        return E_UNKNOWN;
    }
    const char *env = getenv("FAKE_NVML_DEVICES");
    char *copy = strdup(env ? env : "");
    char *save = NULL;
    device_count = 0;
    for (char *item = strtok_r(copy, ";", &save); item && device_count < MAX_DEVICES;
         item = strtok_r(NULL, ";", &save)) {
        if (*item) {
            parse_device(item, &devices[device_count], device_count);
            device_count++;
        }
    }
    free(copy);
    return OK;
}

static int valid(nvmlDevice_t d) {
    return refcount > 0 && d >= devices && d < devices + device_count;
}

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *value) {
    if (!out) return E_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return E_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return OK;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    init_calls++;
    nvmlReturn_t ret = load_config();
    if (ret == OK) refcount++;
    return ret;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (refcount <= 0) return E_UNINITIALIZED;
    refcount--;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case OK: return "Success";
    case E_UNINITIALIZED: return "Uninitialized";
    case E_INVALID_ARGUMENT: return "Invalid Argument";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_NO_PERMISSION: return "Insufficient Permissions";
    case E_NOT_FOUND: return "Not Found";
    case E_INSUFFICIENT_SIZE: return "Insufficient Size";
    case E_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case E_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (refcount <= 0) return E_UNINITIALIZED;
    const char *v = getenv("FAKE_NVML_DRIVER");
    return copy_string(version, length, v && *v ? v : "550.54.15");
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (refcount <= 0) return E_UNINITIALIZED;
    if (!count) return E_INVALID_ARGUMENT;
    *count = device_count;
    return OK;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (refcount <= 0) return E_UNINITIALIZED;
    if (!device || index >= device_count) return E_INVALID_ARGUMENT;
    *device = &devices[index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (refcount <= 0) return E_UNINITIALIZED;
    if (!uuid || !device) return E_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < device_count; i++) {
        if (strcmp(devices[i].uuid, uuid) == 0) {
            *device = &devices[i];
            return OK;
        }
    }
    return E_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    return copy_string(name, length, d->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    return copy_string(uuid, length, d->uuid);
}

static unsigned long long used_memory(nvmlDevice_t d) {
    unsigned long long used = (unsigned long long)(d - devices + 1) * GIB;
    return used < d->memory_total ? used : d->memory_total;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (!memory) return E_INVALID_ARGUMENT;
    memory->total = d->memory_total;
    memory->used = used_memory(d);
    memory->free = d->memory_total - memory->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *memory) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (!memory) return E_INVALID_ARGUMENT;
    if (memory->version != 0x02000028u) return E_ARGUMENT_VERSION_MISMATCH;
    memory->total = d->memory_total;
    memory->reserved = 0;
    memory->used = used_memory(d);
    memory->free = d->memory_total - memory->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->mig < 0) return E_NOT_SUPPORTED;
    if (!current || !pending) return E_INVALID_ARGUMENT;
    *current = *pending = (unsigned int)d->mig;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->no_minor) return E_NOT_SUPPORTED;
    if (!minor) return E_INVALID_ARGUMENT;
    *minor = 7 + (unsigned int)(d - devices);
    return OK;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *util) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->no_util) return E_NOT_SUPPORTED;
    if (!util) return E_INVALID_ARGUMENT;
    util->gpu = 40 + (unsigned int)(d - devices);
    util->memory = 20 + (unsigned int)(d - devices);
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *milliwatts) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->no_power) return E_NOT_SUPPORTED;
    if (!milliwatts) return E_INVALID_ARGUMENT;
    *milliwatts = 250000u + 1000u * (unsigned int)(d - devices);
    return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temp) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->no_temp) return E_NOT_SUPPORTED;
    if (sensor != 0 || !temp) return E_INVALID_ARGUMENT;
    *temp = 50u + (unsigned int)(d - devices);
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    if (!valid(d)) return refcount > 0 ? E_INVALID_ARGUMENT : E_UNINITIALIZED;
    if (d->no_procs) return E_NOT_SUPPORTED;
    if (!count) return E_INVALID_ARGUMENT;
    unsigned int running = d == devices ? 1u : 0u;
    if (*count < running || (running && !infos)) {
        *count = running;
        return E_INSUFFICIENT_SIZE;
    }
    *count = running;
    if (running) {
        infos[0].pid = 4242;
        infos[0].usedGpuMemory = GIB;
        infos[0].gpuInstanceId = 0xFFFFFFFFu;
        infos[0].computeInstanceId = 0xFFFFFFFFu;
    }
    return OK;
}
