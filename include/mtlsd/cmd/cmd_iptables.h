/* cmd_iptables: `mtlsd iptables` (the rules themselves are the iptables module's). */
#ifndef MTLSD_CMD_IPTABLES_H
#define MTLSD_CMD_IPTABLES_H

/* iptables_main runs `mtlsd iptables ...`: |argv[0]| is "iptables". Returns the exit
 * code: 0, 1 when the rules could not be applied, 2 on a bad option. */
int iptables_main(int argc, char **argv);

#endif
