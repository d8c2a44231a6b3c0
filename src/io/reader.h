/*
 * reader.h: the readers under the streamer (io/ internal). A reader takes read requests and hands
 * them back completed, with the byte count or -errno in res; it never interprets results (short reads
 * and errors are the streamer's business, the same for every reader). Only the streamer's I/O thread
 * submits and waits; wake() may be called from any thread and makes a pending wait() return.
 *
 * Two readers: io_uring (uring.c) and a pread thread pool (pread_pool.c) for kernels or sandboxes without
 * io_uring.
 */
#ifndef FERRY_IO_READER_H
#define FERRY_IO_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct load;

struct io_req {
	int file;        /* index into the model's files */
	bool direct;     /* through the file's O_DIRECT descriptor */
	uint64_t off;    /* in the file */
	uint32_t len;
	uint8_t *buf;
	int res;         /* set by the reader: bytes read or -errno */
	struct load *ld; /* owner (streamer) */
	uint64_t dst;    /* offset of buf in the owner's buffer */
	struct io_req *next;
};

/* The files as the readers see them: fd[2 * i] buffered, fd[2 * i + 1] O_DIRECT (-1 when refused). */
struct io_files {
	int n;
	const int *fd;
};

/* Memory the reader may register with the kernel (pinned slots). */
struct io_region {
	void *base;
	size_t len;
};

struct io_reader;
struct io_reader_ops {
	/* Queues a request (at most the reader's depth in flight); 0 or -errno. */
	int (*submit)(struct io_reader *e, struct io_req *r);
	/* Starts what was queued. */
	int (*flush)(struct io_reader *e);
	/* Returns completed requests as a list in *done (possibly empty: woken or timed out). timeout_us < 0
	 * waits without limit. 0 or -errno when the reader itself fails. */
	int (*wait)(struct io_reader *e, long timeout_us, struct io_req **done);
	void (*wake)(struct io_reader *e);
	void (*destroy)(struct io_reader *e);
};

struct io_reader {
	const struct io_reader_ops *ops;
	char desc[96]; /* for statistics: "io_uring, fixed files, fixed buffers" */
};

/* -ENOSYS/-EPERM/-EACCES when io_uring is not available here (old kernel, seccomp, sysctl). */
int io_uring_reader_create(struct io_reader **e, int depth, const struct io_files *files, const struct io_region *regs,
			   int n_regs, char *err, size_t errlen);
int io_pread_reader_create(struct io_reader **e, int n_threads, const struct io_files *files, char *err,
			   size_t errlen);

#endif
