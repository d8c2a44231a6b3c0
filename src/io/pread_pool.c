/*
 * pread_pool.c: the fallback reader, for kernels or sandboxes without io_uring: a few threads that
 * each take a request, issue one pread (restarted only on EINTR; a short count is returned as it is, like
 * io_uring does) and queue the completion for the I/O thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reader.h"

struct pread_reader {
	struct io_reader base;
	const int *fd;
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	struct io_req *queued, **queued_tail; /* submitted, not yet flushed */
	struct io_req *todo, **todo_tail;     /* flushed, waiting for a thread */
	struct io_req *done, **done_tail;
	bool woken, stop;
	int n_threads;
	pthread_t *threads;
};

static void *worker(void *arg)
{
	struct pread_reader *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->todo && !p->stop)
			pthread_cond_wait(&p->work_cv, &p->mu);
		if (!p->todo)
			break;
		struct io_req *r = p->todo;
		p->todo = r->next;
		if (!p->todo)
			p->todo_tail = &p->todo;
		pthread_mutex_unlock(&p->mu);
		ssize_t k;
		do
			k = pread(p->fd[2 * r->file + (r->direct ? 1 : 0)], r->buf, r->len, (off_t)r->off);
		while (k < 0 && errno == EINTR);
		r->res = k < 0 ? -errno : (int)k;
		r->next = NULL;
		pthread_mutex_lock(&p->mu);
		*p->done_tail = r;
		p->done_tail = &r->next;
		pthread_cond_signal(&p->done_cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int pool_submit(struct io_reader *e, struct io_req *r)
{
	struct pread_reader *p = (struct pread_reader *)e;
	r->next = NULL;
	*p->queued_tail = r; /* only the I/O thread touches the queued list */
	p->queued_tail = &r->next;
	return 0;
}

static int pool_flush(struct io_reader *e)
{
	struct pread_reader *p = (struct pread_reader *)e;
	if (!p->queued)
		return 0;
	pthread_mutex_lock(&p->mu);
	*p->todo_tail = p->queued;
	p->todo_tail = p->queued_tail;
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&p->mu);
	p->queued = NULL;
	p->queued_tail = &p->queued;
	return 0;
}

static int pool_wait(struct io_reader *e, long timeout_us, struct io_req **done)
{
	struct pread_reader *p = (struct pread_reader *)e;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	if (timeout_us >= 0) {
		until.tv_sec += timeout_us / 1000000;
		until.tv_nsec += timeout_us % 1000000 * 1000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&p->mu);
	int rc = 0;
	while (!p->done && !p->woken && rc != ETIMEDOUT)
		rc = timeout_us < 0 ? pthread_cond_wait(&p->done_cv, &p->mu)
				    : pthread_cond_timedwait(&p->done_cv, &p->mu, &until);
	*done = p->done;
	p->done = NULL;
	p->done_tail = &p->done;
	p->woken = false;
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static void pool_wake(struct io_reader *e)
{
	struct pread_reader *p = (struct pread_reader *)e;
	pthread_mutex_lock(&p->mu);
	p->woken = true;
	pthread_cond_signal(&p->done_cv);
	pthread_mutex_unlock(&p->mu);
}

static void pool_destroy(struct io_reader *e)
{
	struct pread_reader *p = (struct pread_reader *)e;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work_cv);
	pthread_cond_destroy(&p->done_cv);
	free(p->threads);
	free(p);
}

static const struct io_reader_ops pool_ops = {pool_submit, pool_flush, pool_wait, pool_wake, pool_destroy};

int io_pread_reader_create(struct io_reader **ep, int n_threads, const struct io_files *files, char *err,
			   size_t errlen)
{
	struct pread_reader *p = calloc(1, sizeof(*p));
	if (p)
		p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
	if (!p || !p->threads) {
		free(p);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	p->base.ops = &pool_ops;
	p->fd = files->fd;
	p->queued_tail = &p->queued;
	p->todo_tail = &p->todo;
	p->done_tail = &p->done;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work_cv, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	for (int i = 0; i < n_threads; i++) {
		int rc = pthread_create(&p->threads[i], NULL, worker, p);
		if (rc) {
			snprintf(err, errlen, "cannot start I/O threads: %s", strerror(rc));
			p->n_threads = i;
			pool_destroy(&p->base);
			return -rc;
		}
		p->n_threads = i + 1;
	}
	snprintf(p->base.desc, sizeof(p->base.desc), "pread pool of %d threads", n_threads);
	*ep = &p->base;
	return 0;
}
