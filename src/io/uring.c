/*
 * uring.c: the io_uring reader. One ring of depth + 1 entries: depth reads and one read of an eventfd
 * that other threads write to wake the I/O thread (the ring has a single submitter, so they cannot post to
 * it). The files are registered (fixed files) and so is the pinned memory, in pieces of at most 1 GiB (the
 * kernel's limit per buffer); a request that lies inside a registered piece is issued as READ_FIXED, which
 * saves pinning the pages on every request. Either registration may fail (RLIMIT_MEMLOCK, old kernel):
 * the reader then works without it.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reader.h"

#define PIECE (1ull << 30)

struct uring_reader {
	struct io_reader base;
	struct io_uring ring;
	int efd;
	uint64_t efd_buf;
	bool efd_armed;
	bool fixed_files;
	const int *fd;
	struct iovec *pieces;
	int n_pieces; /* registered; 0 when registration failed */
};

static int arm_wake(struct uring_reader *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, u->efd, &u->efd_buf, sizeof(u->efd_buf), 0);
	io_uring_sqe_set_data(sqe, NULL);
	u->efd_armed = true;
	return 0;
}

static int piece_of(const struct uring_reader *u, const struct io_req *r)
{
	for (int i = 0; i < u->n_pieces; i++) {
		const uint8_t *b = u->pieces[i].iov_base;
		if (r->buf >= b && r->buf + r->len <= b + u->pieces[i].iov_len)
			return i;
	}
	return -1;
}

static int uring_submit(struct io_reader *e, struct io_req *r)
{
	struct uring_reader *u = (struct uring_reader *)e;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		io_uring_submit(&u->ring);
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
	}
	int slot = 2 * r->file + (r->direct ? 1 : 0);
	int fd = u->fixed_files ? slot : u->fd[slot];
	int piece = piece_of(u, r);
	if (piece >= 0)
		io_uring_prep_read_fixed(sqe, fd, r->buf, r->len, r->off, piece);
	else
		io_uring_prep_read(sqe, fd, r->buf, r->len, r->off);
	if (u->fixed_files)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, r);
	return 0;
}

static int uring_flush(struct io_reader *e)
{
	struct uring_reader *u = (struct uring_reader *)e;
	int rc = io_uring_submit(&u->ring);
	return rc < 0 ? rc : 0;
}

static int uring_wait(struct io_reader *e, long timeout_us, struct io_req **done)
{
	struct uring_reader *u = (struct uring_reader *)e;
	*done = NULL;
	if (!u->efd_armed) {
		int rc = arm_wake(u);
		if (rc)
			return rc;
	}
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = timeout_us % 1000000 * 1000};
	int rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, timeout_us < 0 ? NULL : &ts, NULL);
	if (rc < 0 && rc != -ETIME && rc != -EINTR)
		return rc;
	struct io_req **tail = done;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		struct io_req *r = io_uring_cqe_get_data(cqe);
		n++;
		if (!r) {
			u->efd_armed = false; /* the wake-up read completed; re-armed on the next wait */
			continue;
		}
		r->res = cqe->res;
		r->next = NULL;
		*tail = r;
		tail = &r->next;
	}
	io_uring_cq_advance(&u->ring, n);
	return 0;
}

static void uring_wake(struct io_reader *e)
{
	struct uring_reader *u = (struct uring_reader *)e;
	uint64_t one = 1;
	ssize_t k = write(u->efd, &one, sizeof(one));
	(void)k; /* the counter saturating is still a wake-up */
}

static void uring_destroy(struct io_reader *e)
{
	struct uring_reader *u = (struct uring_reader *)e;
	io_uring_queue_exit(&u->ring);
	close(u->efd);
	free(u->pieces);
	free(u);
}

static const struct io_reader_ops uring_ops = {uring_submit, uring_flush, uring_wait, uring_wake, uring_destroy};

/* Registers the regions in pieces of at most 1 GiB; on failure the reader reads without fixed buffers. */
static void register_buffers(struct uring_reader *u, const struct io_region *regs, int n_regs)
{
	int n = 0;
	for (int i = 0; i < n_regs; i++)
		n += (int)((regs[i].len + PIECE - 1) / PIECE);
	if (n == 0 || !(u->pieces = calloc((size_t)n, sizeof(*u->pieces))))
		return;
	int k = 0;
	for (int i = 0; i < n_regs; i++)
		for (size_t off = 0; off < regs[i].len; off += PIECE)
			u->pieces[k++] = (struct iovec){(uint8_t *)regs[i].base + off,
							 regs[i].len - off < PIECE ? regs[i].len - off : PIECE};
	if (io_uring_register_buffers(&u->ring, u->pieces, (unsigned)n) == 0)
		u->n_pieces = n;
}

int io_uring_reader_create(struct io_reader **ep, int depth, const struct io_files *files, const struct io_region *regs,
			   int n_regs, char *err, size_t errlen)
{
	struct uring_reader *u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = io_uring_queue_init((unsigned)depth + 1, &u->ring, 0);
	if (rc < 0) {
		snprintf(err, errlen, "io_uring unavailable: %s", strerror(-rc));
		free(u);
		return rc;
	}
	u->efd = eventfd(0, EFD_CLOEXEC);
	if (u->efd < 0) {
		rc = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		io_uring_queue_exit(&u->ring);
		free(u);
		return rc;
	}
	u->base.ops = &uring_ops;
	u->fd = files->fd;
	u->fixed_files = io_uring_register_files(&u->ring, files->fd, (unsigned)(2 * files->n)) == 0;
	register_buffers(u, regs, n_regs);
	snprintf(u->base.desc, sizeof(u->base.desc), "io_uring depth %d%s%s", depth,
		 u->fixed_files ? ", fixed files" : "", u->n_pieces ? ", fixed buffers" : "");
	*ep = &u->base;
	return 0;
}
