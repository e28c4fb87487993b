/* server: the process's lifecycle (docs/admin.md) for `mtlsd run`: validate, load
 * certificates, bind everything, start the admin port, the certificate watch and the
 * workers, then serve until a drain ends. It owns the runtime and is the only part that
 * changes it wholesale (publishing certificates, moving the state); the parts it starts
 * call back into it through their ops tables. */
#ifndef MTLSD_SERVER_H
#define MTLSD_SERVER_H

#include "mtlsd/config/config.h"

/* server_run runs mtlsd with |cfg| until a drain completes; returns the exit code. */
int server_run(const struct config *cfg);

#endif
