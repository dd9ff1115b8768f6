/* server/worker.h - the worker threads and their listening sockets. */
#ifndef MAGPIE_SERVER_WORKER_H
#define MAGPIE_SERVER_WORKER_H

/* Creates the workers and their listening sockets, then starts the
 * threads. Returns MAGPIE_OK or MAGPIE_ERR (logged). */
int mp_workers_start(void);
/* Closes listeners and every stream, then joins the threads. */
void mp_workers_stop(void);
void mp_workers_free(void);

#endif
