// SPDX-License-Identifier: GPL-2.0
/*
 * kvmi_bench: what an introspection event costs, for `make bench`.
 *
 * Every figure is measured in one boot, against a baseline measured in
 * the same boot (the machine is noisy): a userspace exit, i.e. the guest
 * runs `out`, KVM_RUN returns KVM_EXIT_IO and the VMM calls KVM_RUN again.
 * The guest times each operation with the TSC (KVM_GET_TSC_KHZ converts);
 * PAUSE_VCPU, which the tool starts, is timed by the tool from its command
 * to its reply to the event.
 *
 * This program is the VMM (two VMs from the KVM selftest library: "plain",
 * never hooked, and "hooked", with 4 vCPUs) and the tool (a thread on the
 * other end of the socket that answers CONTINUE; it blocks in read(), or
 * busy-polls the socket with -p style rows).
 *
 * Output: a table, "BENCH-CDF <row> <percentile> <us>" lines (latency
 * distributions) and "BENCH-TPUT <vcpus> <events/s>" lines, plotted by
 * scripts/bench.sh.  -s: a short run (make test only checks that it ran).
 * -t: the profile instead (make profile, a kernel with tracing): a few
 * HYPERCALL rows traced through tracefs (KVM's exits and entries, the
 * scheduler's wake-ups and switches, the tool's socket syscalls, the
 * event's send and the kernel's socket reads), dumped between BENCH-PROF-BEGIN/END lines for
 * scripts/profile.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/kvmi.h>
#include <linux/kvm_para.h>

#include "kvm_util.h"
#include "processor.h"

#define NR_VCPUS	4
#define MAX_SAMPLES	4000
#define BENCH_PORT	0x2000
#define STOP_SEQ	0x5709000u
#define POLL_PARAM	"/sys/module/kvm/parameters/introspection_poll_ns"

enum { M_NONE, M_OUT, M_HC, M_CR, M_MSR, M_SPIN };

/* Guest side: the VMM sets these between runs. */
static volatile uint64_t g_mode, g_count, g_stop;
static uint64_t g_samples[NR_VCPUS][MAX_SAMPLES];

static void guest_op(uint64_t mode, uint64_t *cr4, uint64_t i)
{
	uint64_t rax = KVM_HC_XEN_HVM_OP;

	switch (mode) {
	case M_OUT:
		asm volatile("outb %%al, %%dx" : : "a"(0), "d"(BENCH_PORT));
		break;
	case M_HC:
		if (host_cpu_is_amd)
			asm volatile("vmmcall" : "+a"(rax)
				     : "D"(KVM_HC_XEN_HVM_OP_GUEST_REQUEST_VM_EVENT)
				     : "memory");
		else
			asm volatile("vmcall" : "+a"(rax)
				     : "D"(KVM_HC_XEN_HVM_OP_GUEST_REQUEST_VM_EVENT)
				     : "memory");
		break;
	case M_CR:
		/* PCE only lets CPL 3 read the PMCs: harmless to toggle. */
		*cr4 ^= X86_CR4_PCE;
		set_cr4(*cr4);
		break;
	case M_MSR:
		wrmsr(MSR_STAR, 0x0023001000000000ull + (i & 0xff));
		break;
	}
}

static void guest_code(uint64_t id)
{
	uint64_t mode, n, i, t0, cr4;

	for (;;) {
		GUEST_SYNC(0);
		mode = g_mode;
		n = g_count;
		if (mode == M_SPIN) {
			while (!g_stop)
				;
			continue;
		}
		cr4 = get_cr4();
		for (i = 0; i < n; i++) {
			t0 = rdtsc();
			guest_op(mode, &cr4, i);
			g_samples[id][i % MAX_SAMPLES] = rdtsc() - t0;
		}
	}
}

/* VMM side: one thread per vCPU, each run is "go" -> GUEST_SYNC -> "done". */
struct bvcpu {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int id;
	volatile pid_t tid;
	pthread_t th;
	sem_t go, done;
};

static struct bvcpu plain, hooked[NR_VCPUS];
static double tsc_mhz;

static void *vcpu_main(void *arg)
{
	struct bvcpu *b = arg;
	struct kvm_run *run = b->vcpu->run;
	struct ucall uc;
	int rc;

	b->tid = syscall(SYS_gettid);
	for (;;) {
		sem_wait(&b->go);
		for (;;) {
			rc = ioctl(b->vcpu->fd, KVM_RUN, NULL);
			if (rc < 0 && errno == EINTR)
				continue;
			TEST_ASSERT(!rc, "KVM_RUN: %s", strerror(errno));
			if (run->exit_reason == KVM_EXIT_IO &&
			    run->io.port == BENCH_PORT)
				continue;
			rc = get_ucall(b->vcpu, &uc);
			if (rc == UCALL_SYNC)
				break;
			if (rc == UCALL_ABORT)
				REPORT_GUEST_ASSERT(uc);
			TEST_FAIL("vCPU %d: exit reason %u", b->id,
				  run->exit_reason);
		}
		sem_post(&b->done);
	}
	return NULL;
}

static void vcpu_start(struct bvcpu *b, struct kvm_vm *vm,
		       struct kvm_vcpu *vcpu, int id)
{
	b->vm = vm;
	b->vcpu = vcpu;
	b->id = id;
	vcpu_args_set(vcpu, 1, id);
	sem_init(&b->go, 0, 0);
	sem_init(&b->done, 0, 0);
	pthread_create(&b->th, NULL, vcpu_main, b);
	sem_post(&b->go);	/* to the first GUEST_SYNC */
	sem_wait(&b->done);
}

static void guest_set(struct kvm_vm *vm, volatile uint64_t *g, uint64_t v)
{
	*(volatile uint64_t *)addr_gva2hva(vm, (vm_vaddr_t)g) = v;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/*
 * Runs @n operations of @mode on @nr vCPUs at once; returns the wall time
 * in us.  The samples of vCPU b[0] go to @out (if not NULL), in us.
 */
static double run_phase(struct bvcpu *b, int nr, uint64_t mode, uint64_t n,
			double *out)
{
	double t0, t;
	uint64_t i, *s;
	int v;

	guest_set(b[0].vm, &g_mode, mode);
	guest_set(b[0].vm, &g_count, n);
	t0 = now_us();
	for (v = 0; v < nr; v++)
		sem_post(&b[v].go);
	for (v = 0; v < nr; v++)
		sem_wait(&b[v].done);
	t = now_us() - t0;
	for (i = 0; out && i < n && i < MAX_SAMPLES; i++) {
		s = addr_gva2hva(b[0].vm, (vm_vaddr_t)&g_samples[b[0].id][i]);
		out[i] = *s / tsc_mhz;
	}
	return t;
}

/* The tool. */
static int tool_fd;
static volatile int tool_polling;
static volatile pid_t tool_tid;
static uint32_t cmd_seq = 1;
static int cmds_sent, cmds_answered, cmd_errors, tool_events;
static pthread_t tool_th;

static int tool_read(void *buf, size_t size)
{
	size_t done = 0;
	ssize_t n;

	while (done < size) {
		n = recv(tool_fd, (char *)buf + done, size - done,
			 tool_polling ? MSG_DONTWAIT : 0);
		if (n > 0)
			done += n;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		else
			return -1;
	}
	return 0;
}

static void tool_write(const void *buf, size_t size)
{
	TEST_ASSERT(write(tool_fd, buf, size) == (ssize_t)size,
		    "write to the KVMI socket: %s", strerror(errno));
}

struct msg {
	struct kvmi_msg_hdr hdr;
	union {
		struct kvmi_event ev;
		struct kvmi_error_code ec;
		char body[KVMI_MSG_SIZE];
	};
};

/*
 * Reads a message and answers it if it is an event (CONTINUE, letting a
 * CR or MSR write through).  Returns the event id, or -1 for the reply
 * to a command (@seq: its sequence number).
 */
static int tool_one(struct msg *m, uint32_t *seq)
{
	struct {
		struct kvmi_msg_hdr hdr;
		struct kvmi_vcpu_hdr vcpu;
		struct kvmi_event_reply reply;
		__u64 new_val;
	} rpl = { };
	size_t size = sizeof(rpl) - sizeof(rpl.new_val);
	const void *specific;

	TEST_ASSERT(!tool_read(&m->hdr, sizeof(m->hdr)) &&
		    m->hdr.size <= sizeof(m->body) &&
		    !tool_read(m->body, m->hdr.size), "tool: read failed");
	*seq = m->hdr.seq;
	if (m->hdr.id != KVMI_EVENT) {
		cmds_answered++;
		if (m->ec.err)
			cmd_errors++;
		return -1;
	}

	specific = m->body + m->ev.size;
	if (m->ev.event == KVMI_EVENT_CR) {
		rpl.new_val = ((const struct kvmi_event_cr *)specific)->new_value;
		size = sizeof(rpl);
	} else if (m->ev.event == KVMI_EVENT_MSR) {
		rpl.new_val = ((const struct kvmi_event_msr *)specific)->new_value;
		size = sizeof(rpl);
	}
	rpl.hdr.id = KVMI_EVENT_REPLY;
	rpl.hdr.seq = m->hdr.seq;
	rpl.hdr.size = size - sizeof(rpl.hdr);
	rpl.vcpu.vcpu = m->ev.vcpu;
	rpl.reply.event = m->ev.event;
	rpl.reply.action = KVMI_EVENT_ACTION_CONTINUE;
	tool_write(&rpl, size);
	tool_events++;
	return m->ev.event;
}

static void *tool_main(void *arg)
{
	static struct msg m;
	uint32_t seq;

	tool_tid = syscall(SYS_gettid);
	for (;;)
		if (tool_one(&m, &seq) < 0 && seq == STOP_SEQ)
			break;
	return NULL;
}

static void tool_send(uint16_t id, const void *req, size_t size, uint32_t seq)
{
	struct {
		struct kvmi_msg_hdr hdr;
		char req[64];
	} m = { .hdr = { .id = id, .size = size, .seq = seq } };

	memcpy(m.req, req, size);
	tool_write(&m, sizeof(m.hdr) + size);
	cmds_sent++;
}

static void tool_start(int polling)
{
	tool_polling = polling;
	pthread_create(&tool_th, NULL, tool_main, NULL);
}

/* GET_VERSION with STOP_SEQ: the thread ends when its reply arrives. */
static void tool_stop(void)
{
	tool_send(KVMI_GET_VERSION, NULL, 0, STOP_SEQ);
	pthread_join(tool_th, NULL);
	tool_tid = 0;
}

struct vcpu_cmd {
	struct kvmi_vcpu_hdr hdr;
	union {
		struct kvmi_control_events ctl;
		struct kvmi_pause_vcpu pause;
		struct kvmi_control_cr cr;
		struct kvmi_control_msr msr;
	};
};

static void vcpu_command(int vcpu, uint16_t id, struct vcpu_cmd *c, size_t size)
{
	c->hdr.vcpu = vcpu;
	tool_send(id, c, sizeof(c->hdr) + size, ++cmd_seq);
}

/* PAUSE_VCPU, timed by the tool (no tool thread: we read the socket). */
static void pause_phase(int n, double *out)
{
	struct vcpu_cmd c = { };
	static struct msg m;
	int i, got_reply, got_event, ev;
	uint32_t seq, s;
	double t0;

	guest_set(hooked[0].vm, &g_stop, 0);
	guest_set(hooked[0].vm, &g_mode, M_SPIN);
	sem_post(&hooked[0].go);
	for (i = 0; i < n; i++) {
		t0 = now_us();
		vcpu_command(0, KVMI_PAUSE_VCPU, &c, sizeof(c.pause));
		seq = cmd_seq;
		got_reply = got_event = 0;
		while (!got_reply || !got_event) {
			ev = tool_one(&m, &s);
			if (ev < 0)
				got_reply |= s == seq;
			else
				got_event |= ev == KVMI_EVENT_PAUSE_VCPU;
		}
		out[i] = now_us() - t0;
	}
	guest_set(hooked[0].vm, &g_stop, 1);
	sem_wait(&hooked[0].done);
}

/* Busy host: one spinning process per CPU, stopped until needed. */
static pid_t hogs[64];
static int nr_hogs;

static void hogs_create(void)
{
	int i, st;

	nr_hogs = sysconf(_SC_NPROCESSORS_ONLN);
	if (nr_hogs > 64)
		nr_hogs = 64;
	for (i = 0; i < nr_hogs; i++) {
		hogs[i] = fork();
		TEST_ASSERT(hogs[i] >= 0, "fork");
		if (!hogs[i]) {
			raise(SIGSTOP);
			for (;;)
				asm volatile("" ::: "memory");
		}
		waitpid(hogs[i], &st, WUNTRACED);
	}
}

static void hogs_signal(int sig)
{
	int i;

	for (i = 0; i < nr_hogs; i++)
		kill(hogs[i], sig);
}

static long poll_param = -1;	/* the kernel's, if it has one */

static void set_poll_param(long ns)
{
	FILE *f = fopen(POLL_PARAM, "w");

	if (!f)
		return;
	fprintf(f, "%ld\n", ns);
	fclose(f);
}

static void read_poll_param(void)
{
	FILE *f = fopen(POLL_PARAM, "r");

	if (f) {
		if (fscanf(f, "%ld", &poll_param) != 1)
			poll_param = -1;
		fclose(f);
	}
}

/* The hooked VM's introspection statistics, as KVM's debugfs shows them. */
static void print_stats(struct kvm_vm *vm)
{
	char pattern[128], name[64];
	unsigned long long v;
	glob_t g;
	size_t i;
	FILE *f;

	snprintf(pattern, sizeof(pattern), "/sys/kernel/debug/kvm/%d-%d/kvmi_*",
		 getpid(), vm->fd);
	if (glob(pattern, 0, NULL, &g)) {
		printf("introspection statistics: none (%s)\n", pattern);
		return;
	}
	printf("introspection statistics of the hooked VM (debugfs):\n");
	for (i = 0; i < g.gl_pathc; i++) {
		f = fopen(g.gl_pathv[i], "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &v) == 1) {
			snprintf(name, sizeof(name), "%s",
				 strrchr(g.gl_pathv[i], '/') + 1);
			printf("  %-28s %llu\n", name, v);
		}
		fclose(f);
	}
	globfree(&g);
}

/*
 * The rows of the latency table.  The machine is shared and its load
 * changes by the second: every row is measured in chunks, taking turns
 * with the others (baseline included), so that they all see the same
 * load.
 */
enum { T_NONE = -1, T_BLOCK, T_POLL };

struct row {
	const char *name;
	const char *tag;
	int hooked;	/* the hooked VM (else the plain one) */
	uint64_t mode;
	int tool;	/* T_*: the tool thread's mode */
	int no_poll;	/* kvm.introspection_poll_ns = 0 meanwhile */
	int pause;	/* PAUSE_VCPU, timed by the tool */
	int hog;	/* busy host */
	int base;	/* its baseline row */

	int n;
	double *v;	/* samples, us (sorted at the end) */
	double wall;	/* summed wall time of the guest rows, us */
	double st[5];	/* summed deltas of the kernel statistics */
	int have_st;
};

static struct row rows[] = {
	{ "userspace exit (baseline: out, KVM_RUN)", "exit", 0, M_OUT, T_NONE, 0, 0, 0, 0 },
	{ "in-kernel exit (hypercall, not hooked)", "kexit", 0, M_HC, T_NONE, 0, 0, 0, 0 },
	{ "HYPERCALL event, tool blocks", "hc-block", 1, M_HC, T_BLOCK, 0, 0, 0, 0 },
	{ "CR event (CR4 write), tool blocks", "cr-block", 1, M_CR, T_BLOCK, 0, 0, 0, 0 },
	{ "MSR event (STAR write), tool blocks", "msr-block", 1, M_MSR, T_BLOCK, 0, 0, 0, 0 },
	{ "PAUSE_VCPU (tool-timed), tool blocks", "pause-block", 1, M_SPIN, T_BLOCK, 0, 1, 0, 0 },
	{ "HYPERCALL event, tool polls", "hc-poll", 1, M_HC, T_POLL, 0, 0, 0, 0 },
	{ "CR event (CR4 write), tool polls", "cr-poll", 1, M_CR, T_POLL, 0, 0, 0, 0 },
	{ "MSR event (STAR write), tool polls", "msr-poll", 1, M_MSR, T_POLL, 0, 0, 0, 0 },
	{ "PAUSE_VCPU (tool-timed), tool polls", "pause-poll", 1, M_SPIN, T_POLL, 0, 1, 0, 0 },
	{ "HYPERCALL, tool blocks, vCPU poll off", "hc-block-nopoll", 1, M_HC, T_BLOCK, 1, 0, 0, 0 },
	{ "HYPERCALL, tool polls, vCPU poll off", "hc-poll-nopoll", 1, M_HC, T_POLL, 1, 0, 0, 0 },
	{ "busy host: userspace exit (baseline)", "hog-exit", 0, M_OUT, T_NONE, 0, 0, 1, 12 },
	{ "busy host: HYPERCALL, tool blocks", "hog-hc-block", 1, M_HC, T_BLOCK, 0, 0, 1, 12 },
	{ "busy host: HYPERCALL, tool polls", "hog-hc-poll", 1, M_HC, T_POLL, 0, 0, 1, 12 },
};
#define NR_ROWS ((int)(sizeof(rows) / sizeof(rows[0])))

/* A statistic of the hooked VM (summed over its vCPUs), or -1. */
static struct kvm_vm *stats_vm;

static double vm_stat(const char *name)
{
	char path[160];
	unsigned long long v;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/%d-%d/%s",
		 getpid(), stats_vm->fd, name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	ok = fscanf(f, "%llu", &v) == 1;
	fclose(f);
	return ok ? (double)v : -1;
}

enum { ST_REPLIES, ST_WAIT, ST_POLL_OK, ST_POLL_FAIL, ST_MSGS, NR_ST };
static const char * const st_names[NR_ST] = {
	"kvmi_replies", "kvmi_wait_ns", "kvmi_poll_success", "kvmi_poll_fail",
	"kvmi_poll_msgs",
};

static void stats_snap(double *st)
{
	int i;

	for (i = 0; i < NR_ST; i++)
		st[i] = vm_stat(st_names[i]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const struct row *r, double p)
{
	return r->v[(size_t)(p / 100.0 * (r->n - 1) + 0.5)];
}

static double median(const struct row *r)
{
	return pct(r, 50);
}

static int row_skipped(const struct row *r)
{
	return r->no_poll && poll_param <= 0;
}

/* One chunk of @k samples of row @r. */
static void run_chunk(struct row *r, int k)
{
	static double s[MAX_SAMPLES];
	double st0[NR_ST], st1[NR_ST];
	struct bvcpu *b = r->hooked ? &hooked[0] : &plain;
	int i;

	if (r->no_poll)
		set_poll_param(0);
	if (r->tool != T_NONE && !r->pause)
		tool_start(r->tool == T_POLL);
	if (!r->pause)
		run_phase(b, 1, r->mode, 8, NULL);	/* warm up */
	stats_snap(st0);
	if (r->pause) {
		tool_polling = r->tool == T_POLL;
		pause_phase(k, s);
	} else {
		r->wall += run_phase(b, 1, r->mode, k, s);
	}
	stats_snap(st1);
	if (r->tool != T_NONE && !r->pause)
		tool_stop();
	if (r->no_poll)
		set_poll_param(poll_param);

	if (!r->v)
		r->v = calloc(MAX_SAMPLES * 4, sizeof(double));
	for (i = 0; i < k && r->n < MAX_SAMPLES * 4; i++)
		r->v[r->n++] = s[i];
	if (r->hooked && st0[ST_REPLIES] >= 0) {
		r->have_st = 1;
		for (i = 0; i < NR_ST; i++)
			r->st[i] += st1[i] - st0[i];
	}
}

static void print_rows(void)
{
	int i;

	printf("%-40s %5s %8s %9s %9s %9s %6s %6s %6s %8s %6s %5s\n",
	       "round trip (1 vCPU)", "n", "p10 us", "median us", "p99 us",
	       "mean us", "x p10", "x med", "x p99", "wait us", "polled",
	       "msgs");
	for (i = 0; i < NR_ROWS; i++) {
		struct row *r = &rows[i], *b = &rows[r->base];
		double n = r->st[ST_REPLIES];
		double polls = r->st[ST_POLL_OK] + r->st[ST_POLL_FAIL];

		if (!r->n)
			continue;
		printf("%-40s %5d %8.1f %9.1f %9.1f ", r->name, r->n, pct(r, 10),
		       median(r), pct(r, 99));
		if (r->wall)
			printf("%9.1f", r->wall / r->n);
		else
			printf("%9s", "-");
		printf(" %6.2f %6.2f %6.2f", pct(r, 10) / pct(b, 10),
		       median(r) / median(b), pct(r, 99) / pct(b, 99));
		if (r->have_st && n > 0 && r->st[ST_WAIT] >= 0)
			printf(" %8.1f", r->st[ST_WAIT] / n / 1000);
		else
			printf(" %8s", "-");
		if (r->have_st && polls > 0)
			printf(" %5.0f%%", 100 * r->st[ST_POLL_OK] / polls);
		else
			printf(" %6s", "-");
		if (r->have_st && n > 0 && poll_param >= 0)
			printf(" %5.2f\n", r->st[ST_MSGS] / n);
		else
			printf(" %5s\n", "-");
	}
}

static void print_cdfs(void)
{
	static const double ps[] = { 0.5, 99.5, 99.9 };
	int i, p;

	for (i = 0; i < NR_ROWS; i++) {
		if (!rows[i].n)
			continue;
		printf("BENCH-CDF %s %.1f %.3f\n", rows[i].tag, ps[0],
		       pct(&rows[i], ps[0]));
		for (p = 1; p < 100; p++)
			printf("BENCH-CDF %s %d %.3f\n", rows[i].tag, p,
			       pct(&rows[i], p));
		printf("BENCH-CDF %s %.1f %.3f\n", rows[i].tag, ps[1],
		       pct(&rows[i], ps[1]));
		printf("BENCH-CDF %s %.1f %.3f\n", rows[i].tag, ps[2],
		       pct(&rows[i], ps[2]));
	}
}

/* -t: the profile (make profile). */
#define TRACEFS		"/sys/kernel/tracing"
#define NR_RECVFROM	45	/* x86_64: the tool's recv() */
#define NR_WRITE	1	/* the tool's replies */

static int tracefs_write(const char *file, const char *val, int append)
{
	char path[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), TRACEFS "/%s", file);
	fd = open(path, O_WRONLY | (append ? O_APPEND : O_TRUNC));
	if (fd < 0)
		return -1;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

static void tracefs_set(const char *file, const char *val)
{
	TEST_ASSERT(!tracefs_write(file, val, 0), "tracefs %s <- '%s': %s",
		    file, val, strerror(errno));
}

static void profile_setup(void)
{
	/* Functions a compiler may inline: traced when they exist. */
	static const char * const funcs[] = {
		"kvmi_msg_send_event", "unix_stream_sendmsg", "kernel_recvmsg",
	};
	static const char * const events[] = {
		"kvm:kvm_exit", "kvm:kvm_entry", "sched:sched_wakeup",
		"sched:sched_switch", "raw_syscalls:sys_enter",
		"raw_syscalls:sys_exit",
	};
	size_t i;

	if (mount("tracefs", TRACEFS, "tracefs", 0, NULL) && errno != EBUSY)
		TEST_FAIL("mount tracefs: %s", strerror(errno));
	tracefs_set("tracing_on", "0");
	/* One clock for both CPUs: the segments cross them. */
	tracefs_set("trace_clock", "global");
	tracefs_set("buffer_size_kb", "8192");
	tracefs_set("set_ftrace_filter", "");
	for (i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++)
		if (tracefs_write("set_ftrace_filter", funcs[i], 1))
			printf("profile: %s is not traceable\n", funcs[i]);
	tracefs_set("current_tracer", "function");
	tracefs_set("set_event", "");
	for (i = 0; i < sizeof(events) / sizeof(events[0]); i++)
		TEST_ASSERT(!tracefs_write("set_event", events[i], 1),
			    "trace event %s: %s", events[i], strerror(errno));
}

/* @n HYPERCALL events traced, then the trace on stdout. */
static void profile_row(const char *tag, int polling, int no_poll, int n)
{
	static double s[MAX_SAMPLES];
	char f[128], line[512];
	pid_t tool;
	FILE *t;

	if (no_poll)
		set_poll_param(0);
	tool_start(polling);
	run_phase(&hooked[0], 1, M_HC, 8, NULL);	/* warm up */
	while (!tool_tid)
		usleep(1000);
	tool = tool_tid;
	/* The tool's reply writes and the recv() calls that got data. */
	snprintf(f, sizeof(f), "common_pid == %d && id == %d", tool_tid,
		 NR_WRITE);
	tracefs_set("events/raw_syscalls/sys_enter/filter", f);
	snprintf(f, sizeof(f), "common_pid == %d && id == %d && ret > 0",
		 tool, NR_RECVFROM);
	tracefs_set("events/raw_syscalls/sys_exit/filter", f);
	tracefs_set("trace", "");
	tracefs_set("tracing_on", "1");
	run_phase(&hooked[0], 1, M_HC, n, s);
	tracefs_set("tracing_on", "0");
	tool_stop();
	if (no_poll)
		set_poll_param(poll_param);

	qsort(s, n, sizeof(double), cmp_double);
	printf("BENCH-PROF-BEGIN %s vcpu=%d tool=%d events=%d median_us=%.1f\n",
	       tag, hooked[0].tid, tool, n, s[n / 2]);
	t = fopen(TRACEFS "/trace", "r");
	TEST_ASSERT(t, "open the trace: %s", strerror(errno));
	while (fgets(line, sizeof(line), t))
		if (line[0] != '#')
			fputs(line, stdout);
	fclose(t);
	printf("BENCH-PROF-END %s\n", tag);
	fflush(stdout);
}

int main(int argc, char *argv[])
{
	struct kvm_introspection_feature all = { .allow = 1, .id = -1 };
	struct kvm_introspection_hook hook = { };
	int n = 2000, nhog = 300, ntput = 1000, passes = 10;
	int short_run = 0, profile = 0, opt, i, v, p, nv, k;
	/* Not static: the whole program is loaded into guest memory. */
	double (*idle)[2][2 * MAX_SAMPLES] = calloc(2, sizeof(*idle));
	double *chunk = calloc(MAX_SAMPLES, sizeof(double));
	double tput_t[NR_VCPUS + 1] = { }, rate1 = 0;
	int nidle = 0, j;
	struct kvm_vcpu *vcpus[NR_VCPUS], *vcpu;
	struct kvm_vm *vm, *pvm;
	struct vcpu_cmd c;
	struct utsname u;
	int sv[2];

	while ((opt = getopt(argc, argv, "st")) != -1)
		if (opt == 's')
			short_run = 1;
		else if (opt == 't')
			profile = 1;
	if (short_run) {
		n = 40;
		nhog = 10;
		ntput = 20;
		passes = 1;
	}

	TEST_REQUIRE(kvm_check_cap(KVM_CAP_INTROSPECTION));
	read_poll_param();
	hogs_create();	/* before any VM: no fork with a live VM */

	pvm = vm_create_with_one_vcpu(&vcpu, guest_code);
	vm = vm_create_with_vcpus(NR_VCPUS, guest_code, vcpus);
	stats_vm = vm;
	tsc_mhz = __vcpu_ioctl(vcpu, KVM_GET_TSC_KHZ, NULL) / 1000.0;
	TEST_ASSERT(tsc_mhz > 0, "KVM_GET_TSC_KHZ");
	vcpu_start(&plain, pvm, vcpu, 0);
	for (v = 0; v < NR_VCPUS; v++)
		vcpu_start(&hooked[v], vm, vcpus[v], v);

	uname(&u);
	printf("kvmi_bench: Linux %s, %ld CPUs, TSC %.1f MHz, %s run (%d passes), introspection_poll_ns %ld%s\n",
	       u.release, sysconf(_SC_NPROCESSORS_ONLN), tsc_mhz,
	       short_run ? "short" : "full", passes, poll_param,
	       poll_param < 0 ? " (no such parameter)" : "");

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
	hook.fd = sv[0];
	memcpy(hook.uuid, "kvmi-bench-vm-01", 16);
	vm_ioctl(vm, KVM_INTROSPECTION_HOOK, &hook);
	vm_ioctl(vm, KVM_INTROSPECTION_COMMAND, &all);
	vm_ioctl(vm, KVM_INTROSPECTION_EVENT, &all);
	close(sv[0]);
	tool_fd = sv[1];

	/*
	 * Hooked, nothing enabled, against never hooked: userspace exits
	 * and in-kernel exits (a hypercall KVM answers), in alternating
	 * chunks.
	 */
	k = n / passes;
	for (p = 0; p < 2 * passes; p++) {
		for (i = 0; i < 2; i++) {
			uint64_t mode = i ? M_HC : M_OUT;

			for (v = 0; v < 2; v++) {
				struct bvcpu *b = v ? &hooked[0] : &plain;

				run_phase(b, 1, mode, 8, NULL);
				run_phase(b, 1, mode, k, chunk);
				for (j = 0; j < k; j++)
					idle[i][v][nidle + j] = chunk[j];
			}
		}
		nidle += k;
	}

	/* Every event this bench uses, on every vCPU of the hooked VM. */
	tool_start(0);
	for (v = 0; v < NR_VCPUS; v++) {
		memset(&c, 0, sizeof(c));
		c.ctl.enable = 1;
		c.ctl.event_id = KVMI_EVENT_HYPERCALL;
		vcpu_command(v, KVMI_CONTROL_EVENTS, &c, sizeof(c.ctl));
		c.ctl.event_id = KVMI_EVENT_CR;
		vcpu_command(v, KVMI_CONTROL_EVENTS, &c, sizeof(c.ctl));
		c.ctl.event_id = KVMI_EVENT_MSR;
		vcpu_command(v, KVMI_CONTROL_EVENTS, &c, sizeof(c.ctl));
		memset(&c, 0, sizeof(c));
		c.cr.enable = 1;
		c.cr.cr = 4;
		vcpu_command(v, KVMI_CONTROL_CR, &c, sizeof(c.cr));
		memset(&c, 0, sizeof(c));
		c.msr.enable = 1;
		c.msr.msr = MSR_STAR;
		vcpu_command(v, KVMI_CONTROL_MSR, &c, sizeof(c.msr));
	}
	/* The vCPUs run the commands before they enter the guest. */
	for (v = 0; v < NR_VCPUS; v++)
		run_phase(&hooked[v], 1, M_NONE, 0, NULL);
	tool_stop();

	if (profile) {
		profile_setup();
		profile_row("hc-block", 0, 0, 300);
		profile_row("hc-poll", 1, 0, 300);
		if (poll_param > 0)
			profile_row("hc-block-nopoll", 0, 1, 300);
		goto out;
	}

	/*
	 * Latency, then throughput, in turns; each pass starts at another
	 * row, so that no row always follows the same one.
	 */
	for (p = 0; p < passes; p++) {
		for (j = 0; j < NR_ROWS; j++) {
			i = (j + p) % NR_ROWS;
			if (!rows[i].hog && !row_skipped(&rows[i]))
				run_chunk(&rows[i], n / passes);
		}
		tool_start(0);
		for (nv = 1; nv <= NR_VCPUS; nv *= 2) {
			run_phase(hooked, nv, M_HC, 8, NULL);
			tput_t[nv] += run_phase(hooked, nv, M_HC, ntput / passes,
						NULL);
		}
		tool_stop();
	}

	/* A busy host: a spinning process per CPU. */
	hogs_signal(SIGCONT);
	for (p = 0; p < passes; p++)
		for (i = 0; i < NR_ROWS; i++)
			if (rows[i].hog)
				run_chunk(&rows[i], nhog / passes);
	hogs_signal(SIGSTOP);

	for (i = 0; i < NR_ROWS; i++)
		if (rows[i].n)
			qsort(rows[i].v, rows[i].n, sizeof(double), cmp_double);

	printf("\n");
	print_rows();
	printf("(x p10, x med, x p99: against the userspace exit under the same host load\n"
	       " (busy host: %d spinning processes); mean us: wall time per operation.\n"
	       " From the kernel's statistics, per reply: wait us, the vCPU's mean wait;\n"
	       " polled, the waits that ended while polling; msgs, the tool's messages\n"
	       " the vCPU handled itself)\n", nr_hogs);

	printf("\n%-40s %12s %12s %9s\n", "throughput (HYPERCALL, tool blocks)",
	       "events/s", "0.8*N*one", "x one");
	for (nv = 1; nv <= NR_VCPUS; nv *= 2) {
		double rate = nv * (ntput / passes) * passes / (tput_t[nv] / 1e6);
		char name[64];

		if (nv == 1)
			rate1 = rate;
		snprintf(name, sizeof(name), "%d vCPU%s", nv, nv > 1 ? "s" : "");
		printf("%-40s %12.0f %12.0f %9.2f\n", name, rate,
		       0.8 * nv * rate1, rate / rate1);
		printf("BENCH-TPUT %d %.0f\n", nv, rate);
	}

	printf("\n%-40s %10s %10s %9s %9s\n", "hooked, no event enabled",
	       "plain p10", "hooked p10", "overhead", "(median)");
	for (i = 0; i < 2; i++) {
		double pl, h, plm, hm;

		qsort(idle[i][0], nidle, sizeof(double), cmp_double);
		qsort(idle[i][1], nidle, sizeof(double), cmp_double);
		pl = idle[i][0][nidle / 10];
		h = idle[i][1][nidle / 10];
		plm = idle[i][0][nidle / 2];
		hm = idle[i][1][nidle / 2];
		printf("%-40s %10.2f %10.2f %8.1f%% %8.1f%%\n",
		       i ? "in-kernel exits (hypercall)" : "userspace exits (out)",
		       pl, h, (h / pl - 1) * 100, (hm / plm - 1) * 100);
		printf("BENCH-IDLE %s %.3f %.3f %.3f %.3f\n", i ? "kexit" : "exit",
		       pl, h, plm, hm);
	}
	printf("(%d exits each, timed one by one in the guest, in alternating chunks of %d)\n",
	       nidle, k);
	print_cdfs();

out:
	print_stats(vm);
	printf("tool: %d events answered, %d commands sent, %d answered, %d errors\n",
	       tool_events, cmds_sent, cmds_answered, cmd_errors);
	TEST_ASSERT(!cmd_errors && cmds_answered == cmds_sent,
		    "the tool's commands failed");

	vm_ioctl(vm, KVM_INTROSPECTION_UNHOOK, NULL);
	hogs_signal(SIGKILL);
	for (i = 0; i < nr_hogs; i++)
		waitpid(hogs[i], NULL, 0);
	printf("kvmi_bench: OK\n");
	return 0;
}
