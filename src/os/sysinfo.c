/* sysinfo: CPUs from sched_getaffinity and cgroup v2's cpu.max (see mtlsd/sysinfo.h). */
#include "mtlsd/os/sysinfo.h"

#include <sched.h>
#include <stdio.h>
#include <unistd.h>

/* cpus_within_quota caps |cpus| by a cgroup v2 cpu.max line ("QUOTA PERIOD", or "max
 * PERIOD" for none), rounding the quota up: a pod limited to 1.5 CPUs gets 2 workers. */
static unsigned cpus_within_quota(unsigned cpus, const char *cpu_max) {
  unsigned long long quota = 0, period = 0;
  if (cpu_max == NULL || sscanf(cpu_max, "%llu %llu", &quota, &period) != 2 || quota == 0 ||
      period == 0) {
    return cpus;
  }
  unsigned long long allowed = (quota + period - 1) / period;
  return allowed < cpus ? (unsigned)allowed : cpus;
}

/* The online count alone is the node's, and would give a sidecar on a 64-core node 64
 * threads. */
unsigned sysinfo_available_cpus(void) {
  cpu_set_t set;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned cpus = online < 1 ? 1 : (unsigned)online;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    cpus = (unsigned)CPU_COUNT(&set);
  }
  char line[64];
  FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
  if (f != NULL) {
    if (fgets(line, sizeof(line), f) != NULL) {
      cpus = cpus_within_quota(cpus, line);
    }
    fclose(f);
  }
  return cpus;
}
