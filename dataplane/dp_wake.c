/*
 * dp_wake.c: waking a worker from another thread: an eventfd whose
 * readiness the backend waits for with the sockets' (arm_wake); the wake
 * itself is a write any thread may make.
 */
#include "dp_conn_int.h"
#include "sl_log.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int dp_io_wake_init(struct dp_io *io)
{
	io->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (io->evfd < 0)
		return -errno;
	return io->be->arm_wake(io);
}

void dp_io_wake(struct dp_io *io)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: a wake is pending. */
	if (write(io->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		sl_warn("wake: %s", strerror(errno));
}

void dp_wake_on_event(struct dp_io *io, int more)
{
	uint64_t n;

	if (read(io->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		sl_warn("wake: %s", strerror(errno));
	if (!more)
		io->be->arm_wake(io); /* io_uring: the multishot poll ended */
	if (io->ops->on_wake)
		io->ops->on_wake(io);
}
