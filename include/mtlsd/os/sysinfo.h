/* sysinfo: what the machine lets this process use, read from the kernel (the affinity
 * mask, cgroup v2 files). Nothing is allocated; nothing is kept between calls. */
#ifndef MTLSD_SYSINFO_H
#define MTLSD_SYSINFO_H

/* sysinfo_available_cpus counts the CPUs this process may run on: its affinity mask (a
 * cpuset), capped by its cgroup's CPU quota (a Kubernetes CPU limit), rounded up. Never
 * 0. */
unsigned sysinfo_available_cpus(void);

#endif
