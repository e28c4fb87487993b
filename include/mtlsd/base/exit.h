/* exit: the process exit codes of every mtlsd command (the README, Command line). */
#ifndef MTLSD_EXIT_H
#define MTLSD_EXIT_H

enum mtlsd_exit {
  MTLSD_EXIT_OK = 0,
  MTLSD_EXIT_FAILED = 1, /* A runtime failure or a failed check. */
  MTLSD_EXIT_USAGE = 2,  /* A usage or configuration error. */
};

#endif
