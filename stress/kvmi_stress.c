// SPDX-License-Identifier: GPL-2.0-only
/*
 * KVM introspection (KVMI) stress test: a seeded robustness test of the
 * kernel side.  kvmi_test checks each command, event and error path once;
 * this test throws random, mutated and hostile traffic and racing VMM
 * operations at the kernel, for a number of iterations or seconds.
 *
 * The test is the VMM (it creates VMs with the selftest library and hands
 * one end of an AF_UNIX socketpair to KVM_INTROSPECTION_HOOK) and the tool
 * (a reader thread and a writer thread per session on the other end).
 * Each iteration picks one scenario with a PRNG seeded by -s:
 *
 *  random_messages      bursts of random and mutated commands: known and
 *                       unknown ids, wrong sizes, random vCPU indexes,
 *                       non-zero paddings, random payloads; some bursts end
 *                       with a stray event reply or an oversized header (the
 *                       kernel must disconnect), or with a truncated message
 *                       and the tool's death
 *  invalid_replies      a vCPU waits for a PAUSE_VCPU or HYPERCALL event;
 *                       the tool answers with a wrong seq, vCPU or event id,
 *                       a bad action, a short or oversized reply, non-zero
 *                       padding, a duplicate, or a randomly mutated reply
 *  tool_death           the tool dies at a random point: after N messages,
 *                       in the middle of a reply, while vCPUs wait for
 *                       replies, while it is not reading; the VMM unhooks
 *                       (sometimes PREUNHOOK first) and reconnects
 *  tool_stops_reading   the tool floods commands and stops reading while
 *                       the vCPUs send events; then PREUNHOOK + UNHOOK,
 *                       UNHOOK, or the tool reads again
 *  hook_races           HOOK, PREUNHOOK, UNHOOK, allow-list changes, tool
 *                       deaths and vCPU creation from concurrent threads
 *  vm_destroy           the VM is destroyed (kvm_vm_free) while commands
 *                       and vCPU jobs are in flight
 *  vmm_killed           a VMM child process is killed (SIGKILL, SIGTERM) or
 *                       exits while its vCPUs wait for replies
 *
 * Checked all along: every kernel message is well formed (size, event
 * layout, vCPU index, paddings), every reply matches a command that was
 * sent and comes once; a protocol error disconnects the tool and nothing
 * else does; the guest of every vCPU keeps making progress; PREUNHOOK,
 * UNHOOK, HOOK, KVM_RUN exits and VM destruction complete within bounds.
 * A watchdog thread turns a hang into a failure, prints the kernel stacks
 * of the stuck threads, then shuts the tool sockets down (as if every tool
 * died) to recover and go on.  Kernel splats are counted by the harness.
 *
 * Output is KTAP: one result per scenario, then a summary line
 * "# INFO: stress: seed S, N iterations, M messages, ...".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <linux/kvm_para.h>
#include <linux/kvmi.h>

#include "kselftest.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"

/* ====================================================================== */
/* Bounds, options, counters, output                                      */
/* ====================================================================== */

#define MAX_VCPUS		6
#define START_VCPUS		2
/* A guest must make progress within this (debug kernel under QEMU TCG). */
#define PROGRESS_MS		15000
/* PREUNHOOK, UNHOOK, HOOK and the allow-list ioctls must return within this. */
#define IOCTL_MS		15000
/* The tool must read EOF within this after UNHOOK or a protocol error. */
#define EOF_MS			10000
/* A reply to GET_VERSION must come within this when the tool reads. */
#define PROBE_MS		20000
/* A vCPU thread must leave KVM_RUN within this when kicked. */
#define VCPU_STOP_MS		15000
/* VM destruction and a killed VMM's exit must complete within this. */
#define DESTROY_MS		30000
/* After the watchdog recovered a hang, the thread must return within this. */
#define RECOVER_MS		30000
/* The test stops after this many failures. */
#define MAX_FAILS		10

#define KVM_HC_XEN_HVM_OP	34
#define HVMOP_GUEST_REQUEST	24

#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)
#define ADD(x, v)	__atomic_add_fetch(&(x), (v), __ATOMIC_SEQ_CST)

static struct {
	uint64_t seed;
	int iterations;
	int seconds;
	bool longrun;
	bool verbose;
	bool no_hook_races;	/* -H: control run, the race threads never hook */
	unsigned int mask;
} opt = { .iterations = 30, .seconds = 60, .mask = ~0u };

enum {
	SC_FUZZ,
	SC_BAD_REPLY,
	SC_TOOL_DEATH,
	SC_STOP_READING,
	SC_RACES,
	SC_VM_DESTROY,
	SC_VMM_KILLED,
	SC_REHOOK,
	NR_SCEN,
	SC_SETUP = NR_SCEN,	/* VM creation, teardown: not a scenario */
};

static struct scen {
	const char *name;
	int weight;		/* for the picks after each ran once */
	int runs;
	int fails;
	char first[2][400];	/* the first failures, repeated at the end */
} scen[NR_SCEN + 1] = {
	[SC_FUZZ]	  = { "random_messages", 25 },
	[SC_BAD_REPLY]	  = { "invalid_replies", 15 },
	[SC_TOOL_DEATH]	  = { "tool_death", 15 },
	[SC_STOP_READING] = { "tool_stops_reading", 10 },
	[SC_RACES]	  = { "hook_unhook_vcpu_create_races", 15 },
	[SC_VM_DESTROY]	  = { "vm_destroy_in_flight", 10 },
	[SC_VMM_KILLED]	  = { "vmm_killed_in_event", 10 },
	[SC_REHOOK]	  = { "rehook_starts_clean", 10 },
	[SC_SETUP]	  = { "vm_setup_and_teardown", 0 },
};

static struct {
	uint64_t tx;		/* messages the tool sent */
	uint64_t rx;		/* messages the tool received */
	uint64_t events;
	uint64_t reconnects;	/* HOOK of a new socket after an earlier session */
	uint64_t tool_deaths;
	uint64_t vmm_deaths;
	uint64_t races;		/* racing VMM operations */
	uint64_t vm_destroys;
	uint64_t disconnects;	/* protocol errors that ended a session */
	uint64_t crashes;	/* CRASH actions from mutated replies */
	uint64_t stalls;	/* tool_stops_reading rounds */
	uint64_t vcpus_added;
	uint64_t stale;		/* events a session never asked for */
	uint64_t rehooks;	/* UNHOOK + HOOK back to back */
} st;

static int64_t t_start;
static int cur_iter;
static int stale_reported;	/* the last iteration that reported one */
static int cur_scen = SC_SETUP;
static int nfails;
static int finished;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	if (ms > 0)
		poll(NULL, 0, ms);
}

static pid_t gettid_(void)
{
	return syscall(SYS_gettid);
}

/* One "# ..." line; kernel-splat words are never printed by this test. */
static void __printf(1, 2) stress_info(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	fputs("# ", stdout);
	vprintf(fmt, ap);
	fputs("\n", stdout);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

#define stress_dbg(...)					\
	do {							\
		if (opt.verbose)				\
			stress_info(__VA_ARGS__);		\
	} while (0)

/* A kernel misbehaviour (never a test problem): counted, printed, kept. */
static void __printf(1, 2) stress_err(const char *fmt, ...)
{
	char buf[320];
	int sc = LOAD(cur_scen);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);

	pthread_mutex_lock(&out_lock);
	printf("# FAIL [iteration %d, %s, %.1f s]: %s\n", LOAD(cur_iter),
	       scen[sc].name, (now_ms() - t_start) / 1000.0, buf);
	fflush(stdout);
	if (scen[sc].fails < 2)
		snprintf(scen[sc].first[scen[sc].fails],
			 sizeof(scen[sc].first[0]), "iteration %d: %s",
			 LOAD(cur_iter), buf);
	scen[sc].fails++;
	nfails++;
	pthread_mutex_unlock(&out_lock);
}

/* splitmix64 */
struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd(struct rng *r, uint32_t n)
{
	return n ? rng_next(r) % n : 0;
}

/* [lo, hi] */
static int rnd_range(struct rng *r, int lo, int hi)
{
	return lo + (int)rnd(r, hi - lo + 1);
}

static bool chance(struct rng *r, int pct)
{
	return (int)rnd(r, 100) < pct;
}

/*
 * A scenario's variant: each one in turn on its first runs (so that a
 * short run covers them), then at random.
 */
static int variant(struct rng *r, int sc, int n)
{
	int run = scen[sc].runs - 1;

	return run < n ? run : (int)rnd(r, n);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
	r->s = seed ^ (stream * 0xd1342543de82ef95ull);
	rng_next(r);
}

/* ====================================================================== */
/* Diagnostics: what the threads are doing in the kernel                  */
/* ====================================================================== */

static int read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	buf[0] = 0;
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return 0;
}

/* One task: name, state, wchan; its kernel stack unless it is idle. */
static void dump_task(const char *dir, bool stack)
{
	char path[320], comm[64], stat[512], wchan[128], st_buf[4096];
	char state = '?', *p, *save;
	unsigned long utime = 0, stime = 0;

	snprintf(path, sizeof(path), "%s/comm", dir);
	if (read_small(path, comm, sizeof(comm)))
		return;
	snprintf(path, sizeof(path), "%s/stat", dir);
	read_small(path, stat, sizeof(stat));
	p = strrchr(stat, ')');
	if (p && p[1] == ' ') {
		state = p[2];
		/* Fields 14 and 15: user and system time, in clock ticks. */
		if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &utime, &stime) != 2) {
			utime = 0;
			stime = 0;
		}
	}
	snprintf(path, sizeof(path), "%s/wchan", dir);
	read_small(path, wchan, sizeof(wchan));
	stress_info("  %s (%s): state %c, wchan %s, utime %lu stime %lu ticks",
		    strrchr(dir, '/') + 1, comm, state, wchan[0] ? wchan : "-",
		    utime, stime);
	/* Blocked (D) or running (R: a kernel loop?): where. */
	if (!stack && state != 'D' && state != 'R')
		return;
	snprintf(path, sizeof(path), "%s/stack", dir);
	if (read_small(path, st_buf, sizeof(st_buf)))
		return;
	for (p = strtok_r(st_buf, "\n", &save); p;
	     p = strtok_r(NULL, "\n", &save))
		stress_info("      %s", p);
}

/* Every thread of @pid (0: this process) and every kvmi/ kernel thread. */
static void dump_tasks(pid_t pid, const char *why)
{
	char dir[64], path[320], comm[64];
	struct dirent *d;
	DIR *dd;

	stress_info("tasks (%s):", why);
	if (pid)
		snprintf(dir, sizeof(dir), "/proc/%d/task", pid);
	else
		snprintf(dir, sizeof(dir), "/proc/self/task");
	dd = opendir(dir);
	while (dd && (d = readdir(dd))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		dump_task(path, false);
	}
	if (dd)
		closedir(dd);

	dd = opendir("/proc");
	while (dd && (d = readdir(dd))) {
		if (d->d_name[0] < '0' || d->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", d->d_name);
		if (read_small(path, comm, sizeof(comm)) ||
		    strncmp(comm, "kvmi/", 5))
			continue;
		snprintf(path, sizeof(path), "/proc/%s", d->d_name);
		dump_task(path, true);
	}
	if (dd)
		closedir(dd);
}

/* ====================================================================== */
/* Tool sockets: registry (for recovery) and the watchdog                 */
/* ====================================================================== */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int reg_fds[512];
static int reg_n;

static void reg_add(int fd)
{
	pthread_mutex_lock(&reg_lock);
	TEST_ASSERT(reg_n < (int)ARRAY_SIZE(reg_fds), "too many tool sockets");
	reg_fds[reg_n++] = fd;
	pthread_mutex_unlock(&reg_lock);
}

/* close() under the lock: the watchdog never shuts down a reused fd. */
static void reg_close(int fd)
{
	int i;

	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < reg_n; i++)
		if (reg_fds[i] == fd) {
			reg_fds[i] = reg_fds[--reg_n];
			break;
		}
	close(fd);
	pthread_mutex_unlock(&reg_lock);
}

/* Recovery: as if every tool died (wakes any kernel writer blocked on us). */
static void reg_shutdown_all(void)
{
	int i;

	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < reg_n; i++)
		shutdown(reg_fds[i], SHUT_RDWR);
	pthread_mutex_unlock(&reg_lock);
}

#define WD_SLOTS 64

static struct wd_slot {
	bool active;
	bool fired;
	const char *what;
	int ms;
	pid_t tid;
	int64_t deadline;
	int64_t fired_at;
} wd[WD_SLOTS];
static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t hard_deadline;

static void finish(bool fatal);

/* Arm a deadline for the calling thread's next operation. */
static int wd_begin(const char *what, int ms)
{
	int i;

	pthread_mutex_lock(&wd_lock);
	for (i = 0; i < WD_SLOTS; i++)
		if (!wd[i].active)
			break;
	TEST_ASSERT(i < WD_SLOTS, "watchdog slots exhausted");
	wd[i] = (struct wd_slot){
		.active = true, .what = what, .ms = ms, .tid = gettid_(),
		.deadline = now_ms() + ms,
	};
	pthread_mutex_unlock(&wd_lock);
	return i;
}

/* Returns true if the operation overran (the watchdog reported it). */
static bool wd_end(int i)
{
	bool fired;

	pthread_mutex_lock(&wd_lock);
	fired = wd[i].fired;
	wd[i].active = false;
	pthread_mutex_unlock(&wd_lock);
	return fired;
}

static void *wd_fn(void *arg)
{
	for (;;) {
		struct wd_slot fired = {}, stuck = {};
		bool overdue = false;
		int64_t now;
		int i;

		sleep_ms(100);
		now = now_ms();
		pthread_mutex_lock(&wd_lock);
		for (i = 0; i < WD_SLOTS; i++) {
			if (!wd[i].active)
				continue;
			if (!wd[i].fired && now > wd[i].deadline) {
				wd[i].fired = true;
				wd[i].fired_at = now;
				fired = wd[i];
				break;
			}
			if (wd[i].fired && now > wd[i].fired_at + RECOVER_MS)
				stuck = wd[i];
		}
		overdue = hard_deadline && now > hard_deadline;
		pthread_mutex_unlock(&wd_lock);

		if (fired.active) {
			stress_err("%s did not return within %d s (thread %d)",
				   fired.what, fired.ms / 1000, fired.tid);
			dump_tasks(0, fired.what);
			stress_info("recovering: shutting every tool socket down, as if the tools died");
			reg_shutdown_all();
		}
		if (stuck.active) {
			stress_err("%s still did not return %d s after the tool sockets were shut down: giving up",
				   stuck.what, RECOVER_MS / 1000);
			dump_tasks(0, stuck.what);
			finish(true);
		}
		if (overdue) {
			stress_err("the test overran its time limit by %d s: something is stuck",
				   (int)((now - hard_deadline) / 1000));
			dump_tasks(0, "overrun");
			finish(true);
		}
	}
	return NULL;
}

/* ====================================================================== */
/* The guest and the vCPU threads                                         */
/* ====================================================================== */

/* Written by the guest, read by the host through addr_gva2hva(). */
static uint64_t guest_counter[MAX_VCPUS];

/* The guest agent's "guest request" hypercall: a HYPERCALL event if enabled. */
static void guest_hvm_op_request(void)
{
	uint64_t rax = KVM_HC_XEN_HVM_OP;

	if (host_cpu_is_amd)
		asm volatile("vmmcall" : "+a"(rax)
			     : "D"((uint64_t)HVMOP_GUEST_REQUEST) : "memory");
	else
		asm volatile("vmcall" : "+a"(rax)
			     : "D"((uint64_t)HVMOP_GUEST_REQUEST) : "memory");
}

static void guest_code(uint64_t idx)
{
	int i;

	for (;;) {
		for (i = 0; i < 32; i++)
			WRITE_ONCE(guest_counter[idx], guest_counter[idx] + 1);
		guest_hvm_op_request();
	}
}

struct vcpu_w {
	struct kvm_vcpu *vcpu;
	/*
	 * Opened before the vCPU runs: KVM_GET_STATS_FD, like most vCPU
	 * ioctls, waits for the vCPU's mutex, which KVM_RUN holds.
	 */
	int stats_fd;
	struct kvm_stats_header stats_header;
	struct kvm_stats_desc *stats_desc;
	pthread_t thread;
	bool started;
	bool joined;
	int stop;
	int exited;
	pid_t tid;
	int run_errno;
	uint32_t exit_reason;
};

struct vmctx {
	struct kvm_vm *vm;
	int gen;
	int nr;				/* vCPUs created (LOAD/STORE) */
	bool broken;			/* a vCPU is stuck: make a new VM */
	uint64_t hooks;			/* successful HOOKs */
	struct vcpu_w w[MAX_VCPUS];
	uint64_t *counter[MAX_VCPUS];
};

static void *vcpu_fn(void *arg)
{
	struct vcpu_w *w = arg;
	struct kvm_run *run = w->vcpu->run;

	STORE(w->tid, gettid_());
	for (;;) {
		int r = __vcpu_run(w->vcpu);

		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				if (LOAD(w->stop))
					break;
				continue;
			}
			w->run_errno = errno;
			break;
		}
		/* A mutated reply may be a valid CRASH: the VMM goes on. */
		if (run->exit_reason == KVM_EXIT_SYSTEM_EVENT &&
		    run->system_event.type == KVM_SYSTEM_EVENT_CRASH) {
			ADD(st.crashes, 1);
			if (LOAD(w->stop))
				break;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_INTR && LOAD(w->stop))
			break;
		if (run->exit_reason == KVM_EXIT_INTR)
			continue;
		w->exit_reason = run->exit_reason;
		break;
	}
	STORE(w->exited, 1);
	return NULL;
}

static void sigusr1_handler(int sig)
{
}

static void vcpu_start(struct vmctx *c, int i)
{
	struct vcpu_w *w = &c->w[i];
	int r;

	r = pthread_create(&w->thread, NULL, vcpu_fn, w);
	TEST_ASSERT(!r, "pthread_create: %s", strerror(r));
	w->started = true;
}

static int vcpu_add(struct vmctx *c)
{
	int i = c->nr;

	TEST_ASSERT(i < MAX_VCPUS, "too many vCPUs");
	c->w[i].vcpu = vm_vcpu_add(c->vm, i, guest_code);
	vcpu_args_set(c->w[i].vcpu, 1, (uint64_t)i);
	c->w[i].stats_fd = vcpu_get_stats_fd(c->w[i].vcpu);
	read_stats_header(c->w[i].stats_fd, &c->w[i].stats_header);
	c->w[i].stats_desc = read_stats_descriptors(c->w[i].stats_fd,
						    &c->w[i].stats_header);
	STORE(c->nr, i + 1);
	vcpu_start(c, i);
	return i;
}

/* Kick the thread out of KVM_RUN (signal + immediate_exit) and join it. */
static bool vcpu_stop(struct vcpu_w *w, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	if (!w->started || w->joined)
		return true;
	STORE(w->stop, 1);
	WRITE_ONCE(w->vcpu->run->immediate_exit, 1);
	while (!LOAD(w->exited)) {
		if (now_ms() > deadline)
			return false;
		pthread_kill(w->thread, SIGUSR1);
		sleep_ms(10);
	}
	pthread_join(w->thread, NULL);
	w->joined = true;
	return true;
}

static const char *vcpu_state(struct vcpu_w *w)
{
	static __thread char buf[160];

	snprintf(buf, sizeof(buf), "exit reason %u (%s), KVM_RUN errno %d",
		 w->exit_reason, exit_reason_str(w->exit_reason), w->run_errno);
	return buf;
}

static struct vmctx *vm_new(int nr_vcpus)
{
	static int gen;
	struct vmctx *c = calloc(1, sizeof(*c));
	int i;

	TEST_ASSERT(c, "calloc");
	c->gen = ++gen;
	c->vm = vm_create(MAX_VCPUS);
	for (i = 0; i < MAX_VCPUS; i++)
		c->counter[i] = addr_gva2hva(c->vm,
					     (vm_vaddr_t)&guest_counter[i]);
	for (i = 0; i < nr_vcpus; i++)
		vcpu_add(c);
	return c;
}

static uint64_t counter(struct vmctx *c, int i)
{
	return READ_ONCE(*c->counter[i]);
}

/* A few of the vCPU's KVM statistics, by name. */
static const char *const diag_stats[] = {
	"exits", "hypercalls", "signal_exits", "halt_exits",
	"request_irq_exits", "irq_injections",
};

static void vcpu_stats(struct vcpu_w *w, uint64_t *val)
{
	int i, k;

	memset(val, 0, ARRAY_SIZE(diag_stats) * sizeof(*val));
	for (i = 0; i < w->stats_header.num_desc; i++) {
		struct kvm_stats_desc *d;

		d = get_stats_descriptor(w->stats_desc, i, &w->stats_header);
		for (k = 0; k < (int)ARRAY_SIZE(diag_stats); k++)
			if (!strcmp(d->name, diag_stats[k]))
				read_stat_data(w->stats_fd, &w->stats_header, d,
					       &val[k], 1);
	}
}

/*
 * What a stuck vCPU does: its exit counters over a second (is it entering
 * the guest at all?), then, stopped, where its guest is.
 */
static void diag_vcpu(struct vmctx *c, int i)
{
	uint64_t a[ARRAY_SIZE(diag_stats)], b[ARRAY_SIZE(diag_stats)];
	struct vcpu_w *w = &c->w[i];
	uint64_t start = counter(c, i);
	char line[256];
	int k, n = 0;

	vcpu_stats(w, a);
	sleep_ms(1000);
	vcpu_stats(w, b);
	for (k = 0; k < (int)ARRAY_SIZE(diag_stats); k++)
		n += snprintf(line + n, sizeof(line) - n, " %s %llu (+%llu)",
			      diag_stats[k], (unsigned long long)b[k],
			      (unsigned long long)(b[k] - a[k]));
	stress_info("  vCPU %d of VM %d, over 1 s: guest counter +%llu;%s", i, c->gen,
		    (unsigned long long)(counter(c, i) - start), line);
	if (!LOAD(w->exited) && !vcpu_stop(w, 5000)) {
		stress_info("  vCPU %d: the thread does not leave KVM_RUN", i);
		return;
	}
	{
		uint64_t code = (uint64_t)guest_code;
		struct kvm_sregs sr;
		struct kvm_regs r;

		vcpu_regs_get(w->vcpu, &r);
		vcpu_sregs_get(w->vcpu, &sr);
		stress_info("  vCPU %d: rip 0x%llx (guest_code at 0x%llx), rsp 0x%llx, rax 0x%llx, rdi 0x%llx, rflags 0x%llx; cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx; cs 0x%x",
			    i, r.rip, (unsigned long long)code, r.rsp, r.rax, r.rdi,
			    r.rflags, sr.cr0, sr.cr3, sr.cr4, sr.efer, sr.cs.selector);
	}
}

/*
 * Every running vCPU's guest must make progress within @ms.  A failure
 * marks the VM broken (the main loop makes a new one).
 */
static bool expect_progress(struct vmctx *c, int ms, const char *when)
{
	uint64_t start[MAX_VCPUS];
	int64_t deadline = now_ms() + ms;
	int i, n = LOAD(c->nr);
	bool all;

	for (i = 0; i < n; i++)
		start[i] = counter(c, i);
	for (;;) {
		all = true;
		for (i = 0; i < n; i++) {
			struct vcpu_w *w = &c->w[i];

			if (!w->started)
				continue;
			if (LOAD(w->exited)) {
				stress_err("%s: vCPU %d of VM %d left KVM_RUN: %s", when,
					   i, c->gen, vcpu_state(w));
				diag_vcpu(c, i);
				c->broken = true;
				return false;
			}
			if (counter(c, i) == start[i])
				all = false;
		}
		if (all)
			return true;
		if (now_ms() > deadline)
			break;
		sleep_ms(2);
	}
	for (i = 0; i < n; i++)
		if (c->w[i].started && counter(c, i) == start[i])
			stress_err("%s: the guest of vCPU %d (VM %d, thread %d) made no progress in %d s (counter %llu): stuck vCPU",
				   when, i, c->gen, LOAD(c->w[i].tid), ms / 1000,
				   (unsigned long long)start[i]);
	dump_tasks(0, "stuck vCPU");
	for (i = 0; i < n; i++)
		if (c->w[i].started && counter(c, i) == start[i])
			diag_vcpu(c, i);
	c->broken = true;
	return false;
}

/* The statistics fds hold references to the VM: closed before it goes. */
static void vm_close_stats(struct vmctx *c)
{
	int i;

	for (i = 0; i < LOAD(c->nr); i++) {
		close(c->w[i].stats_fd);
		free(c->w[i].stats_desc);
		c->w[i].stats_fd = -1;
		c->w[i].stats_desc = NULL;
	}
}

/* Stop the vCPU threads and destroy the VM, each step bounded. */
static void vm_free_ctx(struct vmctx *c)
{
	int i, slot;

	for (i = 0; i < LOAD(c->nr); i++) {
		if (vcpu_stop(&c->w[i], VCPU_STOP_MS))
			continue;
		stress_err("vCPU %d of VM %d (thread %d) did not leave KVM_RUN within %d s",
			   i, c->gen, LOAD(c->w[i].tid), VCPU_STOP_MS / 1000);
		dump_tasks(0, "vCPU does not stop");
		stress_info("recovering: shutting every tool socket down");
		reg_shutdown_all();
		if (!vcpu_stop(&c->w[i], RECOVER_MS)) {
			stress_err("vCPU %d of VM %d still in KVM_RUN after the tools died: giving up",
				   i, c->gen);
			finish(true);
		}
	}
	vm_close_stats(c);
	slot = wd_begin("destroying the VM (kvm_vm_free)", DESTROY_MS);
	kvm_vm_free(c->vm);
	wd_end(slot);
	free(c);
}

/* ====================================================================== */
/* VMM ioctls                                                              */
/* ====================================================================== */

static int hook_fd(struct kvm_vm *vm, int fd)
{
	struct kvm_introspection_hook hook = { .fd = fd };

	memcpy(hook.uuid, "kvmi-stress-test", sizeof(hook.uuid));
	return ioctl(vm->fd, KVM_INTROSPECTION_HOOK, &hook);
}

/* An ioctl on the VM fd under the watchdog; returns 0 or -errno. */
static int vm_ioctl_timed(struct kvm_vm *vm, unsigned long req, void *arg,
			  const char *what, int64_t *dur_ms)
{
	int64_t t0 = now_ms();
	int slot = wd_begin(what, IOCTL_MS);
	int r = ioctl(vm->fd, req, arg);
	int err = r < 0 ? -errno : r;

	wd_end(slot);
	if (dur_ms)
		*dur_ms = now_ms() - t0;
	return err;
}

static int do_hook(struct kvm_vm *vm, int fd)
{
	int64_t t0 = now_ms();
	int slot = wd_begin("KVM_INTROSPECTION_HOOK", IOCTL_MS);
	int r = hook_fd(vm, fd);
	int err = r < 0 ? -errno : 0;

	wd_end(slot);
	(void)t0;
	return err;
}

static int do_unhook(struct kvm_vm *vm)
{
	return vm_ioctl_timed(vm, KVM_INTROSPECTION_UNHOOK, NULL,
			      "KVM_INTROSPECTION_UNHOOK", NULL);
}

static int do_preunhook(struct kvm_vm *vm, int64_t *dur)
{
	return vm_ioctl_timed(vm, KVM_INTROSPECTION_PREUNHOOK, NULL,
			      "KVM_INTROSPECTION_PREUNHOOK", dur);
}

static int do_feature(struct kvm_vm *vm, bool command, uint32_t allow,
		      int32_t id)
{
	struct kvm_introspection_feature feat = { .allow = allow, .id = id };

	return vm_ioctl_timed(vm, command ? KVM_INTROSPECTION_COMMAND :
					    KVM_INTROSPECTION_EVENT, &feat,
			      command ? "KVM_INTROSPECTION_COMMAND" :
					"KVM_INTROSPECTION_EVENT", NULL);
}

/*
 * Errors PREUNHOOK may return when the UNHOOK event can't be sent (the
 * tool is gone or doesn't read): it must return, with or without one.
 */
static bool preunhook_err_ok(int err)
{
	return err == 0 || err == -ENOENT || err == -ENOTCONN ||
	       err == -EPIPE || err == -ECONNRESET || err == -ETIMEDOUT ||
	       err == -EAGAIN || err == -EIO || err == -EINTR;
}

/*
 * Everything but the commands that would wreck the guest when fuzzed
 * (registers, guest memory, exceptions): those get -KVM_EPERM.
 */
static int allow_all(struct kvm_vm *vm)
{
	int err;

	err = do_feature(vm, true, 1, -1);
	if (!err)
		err = do_feature(vm, false, 1, -1);
	if (!err)
		err = do_feature(vm, true, 0, KVMI_SET_REGISTERS);
	if (!err)
		err = do_feature(vm, true, 0, KVMI_WRITE_PHYSICAL);
	if (!err)
		err = do_feature(vm, true, 0, KVMI_INJECT_EXCEPTION);
	return err;
}

/* ====================================================================== */
/* Tool sessions: a writer thread and a reader thread per socket           */
/* ====================================================================== */

#define SEQ_BASE	0x40000000u
#define SEQ_SLOTS	65536u
#define SENT_VALID	BIT(31)
#define SENT_ANSWERED	BIT(30)

enum { P_ANSWER, P_SILENT, P_NOREAD, P_HOLD };
enum { D_NONE, D_AFTER_MSGS, D_MID_REPLY };

struct kvmi_msg {
	struct kvmi_msg_hdr hdr;
	uint8_t body[KVMI_MSG_SIZE];
};

struct session {
	int id;
	int fd;				/* the tool end; -1 once closed */
	struct vmctx *vm;		/* NULL: fixed_vcpus (VMM child) */
	int fixed_vcpus;
	struct rng rng;			/* the reader's */

	/* Outgoing bytes, drained by the writer thread. */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	uint8_t *q;
	size_t qhead, qtail, qcap;
	bool qclosed;			/* no more writes (truncation, death) */
	int wbroken;			/* the kernel end is gone */
	int wstop;
	uint32_t seq;			/* next command seq (qlock) */
	uint32_t *sent;			/* SENT_* | id, by seq - SEQ_BASE (qlock) */

	pthread_t writer, reader;
	bool threads;
	int rstop;

	/* Reader behaviour, set by the scenario. */
	int policy;
	int hold_vcpu;
	int held;
	struct kvmi_msg held_msg;
	int die_req;
	int die_mode;
	int die_after;			/* messages (D_AFTER_MSGS) or events */
	bool close_on_unhook;
	bool unhook_enabled;		/* the tool enabled the UNHOOK event */

	/* Reader results. */
	int eof;			/* the kernel closed its end */
	int died;			/* the tool closed its socket */
	int bad_stream;			/* the kernel broke the framing */
	uint32_t probe_seq;
	int probe_ok;
	int unhook_events;
	uint64_t events;
	uint64_t rx;
	uint64_t replies;		/* well-formed replies to our commands */
	/*
	 * Events this session's tool enabled or asked for (bit per event
	 * id): any other one is stale state from an earlier session.  Not
	 * checked once random messages went out (they enable anything).
	 */
	uint32_t asked;
	int fuzzed;
	int stale;			/* events it never asked for */
};

static int session_ids;

static struct session *sess_alloc(int fd, struct vmctx *vm, int fixed_vcpus)
{
	struct session *s = calloc(1, sizeof(*s));

	TEST_ASSERT(s, "calloc");
	s->sent = calloc(SEQ_SLOTS, sizeof(*s->sent));
	TEST_ASSERT(s->sent, "calloc");
	s->id = ADD(session_ids, 1);
	s->fd = fd;
	s->vm = vm;
	s->fixed_vcpus = fixed_vcpus;
	s->seq = SEQ_BASE;
	s->hold_vcpu = -1;
	rng_seed(&s->rng, opt.seed, 1000 + s->id);
	pthread_mutex_init(&s->qlock, NULL);
	pthread_cond_init(&s->qcond, NULL);
	reg_add(fd);
	return s;
}

static int sess_vcpus(struct session *s)
{
	return s->vm ? LOAD(s->vm->nr) : s->fixed_vcpus;
}

static bool sess_gone(struct session *s)
{
	return LOAD(s->eof) || LOAD(s->died) || LOAD(s->bad_stream);
}

/* Queue raw bytes; false once the session can't write any more. */
static bool q_put(struct session *s, const void *buf, size_t len)
{
	bool ok;

	pthread_mutex_lock(&s->qlock);
	ok = !s->qclosed && !s->wbroken;
	if (ok) {
		if (s->qtail + len > s->qcap) {
			size_t used = s->qtail - s->qhead;

			memmove(s->q, s->q + s->qhead, used);
			s->qhead = 0;
			s->qtail = used;
			if (used + len > s->qcap) {
				s->qcap = (used + len) * 2;
				s->q = realloc(s->q, s->qcap);
				TEST_ASSERT(s->q, "realloc");
			}
		}
		memcpy(s->q + s->qtail, buf, len);
		s->qtail += len;
		pthread_cond_signal(&s->qcond);
	}
	pthread_mutex_unlock(&s->qlock);
	return ok;
}

static size_t q_len(struct session *s)
{
	size_t n;

	pthread_mutex_lock(&s->qlock);
	n = s->qtail - s->qhead;
	pthread_mutex_unlock(&s->qlock);
	return n;
}

static void *writer_fn(void *arg)
{
	struct session *s = arg;

	for (;;) {
		struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };
		size_t len;
		ssize_t n;

		pthread_mutex_lock(&s->qlock);
		while (!s->wstop && s->qhead == s->qtail) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&s->qcond, &s->qlock, &ts);
		}
		len = s->qtail - s->qhead;
		pthread_mutex_unlock(&s->qlock);
		if (LOAD(s->wstop))
			break;

		if (poll(&pfd, 1, 20) <= 0)
			continue;
		pthread_mutex_lock(&s->qlock);
		n = send(s->fd, s->q + s->qhead, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			s->qhead += n;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			/* The kernel shut its end down (or we did). */
			s->wbroken = 1;
			s->qhead = s->qtail;
		}
		pthread_mutex_unlock(&s->qlock);
		if (LOAD(s->wbroken))
			break;
	}
	return NULL;
}

static uint32_t sess_seq(struct session *s, uint16_t id, bool record)
{
	uint32_t seq, off;

	pthread_mutex_lock(&s->qlock);
	seq = s->seq++;
	off = seq - SEQ_BASE;
	if (record && off < SEQ_SLOTS)
		s->sent[off] = SENT_VALID | id;
	pthread_mutex_unlock(&s->qlock);
	return seq;
}

static size_t build_msg(void *buf, uint16_t id, uint16_t size, uint32_t seq,
			const void *body, size_t body_len)
{
	struct kvmi_msg_hdr *hdr = buf;

	hdr->id = id;
	hdr->size = size;
	hdr->seq = seq;
	if (body_len)
		memcpy(hdr + 1, body, body_len);
	return sizeof(*hdr) + body_len;
}

/* A well-formed command; returns its seq (0 if the tool can't write). */
static uint32_t sess_cmd(struct session *s, uint16_t id, const void *body,
			 size_t size)
{
	uint8_t buf[sizeof(struct kvmi_msg_hdr) + 64];
	uint32_t seq = sess_seq(s, id, true);

	TEST_ASSERT(size <= 64, "command too big");
	if (!q_put(s, buf, build_msg(buf, id, size, seq, body, size)))
		return 0;
	ADD(st.tx, 1);
	return seq;
}

static uint32_t sess_vcpu_cmd(struct session *s, uint16_t vcpu, uint16_t id,
			      const void *req, size_t size)
{
	uint8_t body[64] = {};
	struct kvmi_vcpu_hdr *vh = (void *)body;

	TEST_ASSERT(size + sizeof(*vh) <= sizeof(body), "command too big");
	vh->vcpu = vcpu;
	if (size)
		memcpy(body + sizeof(*vh), req, size);
	return sess_cmd(s, id, body, sizeof(*vh) + size);
}

static void tool_asks(struct session *s, int event)
{
	__atomic_or_fetch(&s->asked, 1u << event, __ATOMIC_SEQ_CST);
}

static void tool_pause(struct session *s, int vcpu)
{
	struct kvmi_pause_vcpu req = {};

	tool_asks(s, KVMI_EVENT_PAUSE_VCPU);
	sess_vcpu_cmd(s, vcpu, KVMI_PAUSE_VCPU, &req, sizeof(req));
}

static void tool_control_event(struct session *s, int vcpu, int event,
			       bool enable)
{
	struct kvmi_control_events req = { .event_id = event, .enable = enable };

	if (enable)
		tool_asks(s, event);
	sess_vcpu_cmd(s, vcpu, KVMI_CONTROL_EVENTS, &req, sizeof(req));
}

static void tool_control_vm_event(struct session *s, int event, bool enable)
{
	struct kvmi_control_vm_events req = { .event_id = event,
					      .enable = enable };

	if (enable)
		tool_asks(s, event);
	sess_cmd(s, KVMI_CONTROL_VM_EVENTS, &req, sizeof(req));
	if (event == KVMI_EVENT_UNHOOK)
		s->unhook_enabled = enable;
}

/* The tool dies: its socket is closed (after what was queued, if @drain). */
static void tool_die(struct session *s, bool drain)
{
	int64_t deadline = now_ms() + 1000;

	pthread_mutex_lock(&s->qlock);
	s->qclosed = true;
	pthread_mutex_unlock(&s->qlock);
	while (drain && q_len(s) && !LOAD(s->wbroken) && now_ms() < deadline)
		sleep_ms(2);
	STORE(s->wstop, 1);
	pthread_join(s->writer, NULL);
	pthread_mutex_lock(&s->qlock);
	reg_close(s->fd);
	s->fd = -1;
	pthread_mutex_unlock(&s->qlock);
	STORE(s->died, 1);
	ADD(st.tool_deaths, 1);
}

/* 0, -ETIMEDOUT or -EPIPE (EOF, reset, shut down). */
static int read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint8_t *p = buf;

	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		ssize_t n;

		if (left < 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, left > 50 ? 50 : (int)left);
		if (n <= 0)
			continue;
		n = recv(fd, p, len, MSG_DONTWAIT);
		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -EPIPE;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static bool is_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--)
		if (*b++)
			return false;
	return true;
}

/* Size of the event-specific payload after struct kvmi_event. */
static int event_payload_size(int event)
{
	switch (event) {
	case KVMI_EVENT_CR:
		return sizeof(struct kvmi_event_cr);
	case KVMI_EVENT_MSR:
		return sizeof(struct kvmi_event_msr);
	case KVMI_EVENT_BREAKPOINT:
		return sizeof(struct kvmi_event_breakpoint);
	case KVMI_EVENT_TRAP:
		return sizeof(struct kvmi_event_trap);
	case KVMI_EVENT_DESCRIPTOR:
		return sizeof(struct kvmi_event_descriptor);
	}
	return 0;
}

static bool event_implemented(int event)
{
	return event < KVMI_NUM_EVENTS && event != KVMI_EVENT_PF &&
	       event != KVMI_EVENT_SINGLESTEP;
}

struct reply_msg {
	struct kvmi_msg_hdr hdr;
	struct kvmi_vcpu_hdr vh;
	struct kvmi_event_reply r;
	uint8_t extra[KVMI_MSG_SIZE];
};

/* The correct reply: CONTINUE, and CR/MSR writes let through unchanged. */
static size_t make_reply(struct reply_msg *r, const struct kvmi_msg *m,
			 uint8_t action)
{
	const struct kvmi_event *ev = (const void *)m->body;
	const uint8_t *payload = m->body + ev->size;
	uint64_t new_val;
	size_t extra = 0;

	memset(r, 0, offsetof(struct reply_msg, extra) + 8);
	r->hdr.id = KVMI_EVENT_REPLY;
	r->hdr.seq = m->hdr.seq;
	r->vh.vcpu = ev->vcpu;
	r->r.action = action;
	r->r.event = ev->event;
	if (ev->event == KVMI_EVENT_CR) {
		memcpy(&new_val, payload + offsetof(struct kvmi_event_cr, new_value), 8);
		extra = 8;
	} else if (ev->event == KVMI_EVENT_MSR) {
		memcpy(&new_val, payload + offsetof(struct kvmi_event_msr, new_value), 8);
		extra = 8;
	}
	if (extra)
		memcpy(r->extra, &new_val, 8);
	r->hdr.size = sizeof(r->vh) + sizeof(r->r) + extra;
	return sizeof(r->hdr) + r->hdr.size;
}

static void check_event(struct session *s, const struct kvmi_msg *m)
{
	const struct kvmi_event *ev = (const void *)m->body;
	struct reply_msg r;
	size_t len;

	if (m->hdr.size < sizeof(*ev)) {
		stress_err("session %d: event message seq %u of %u bytes (< %zu)",
			   s->id, m->hdr.seq, m->hdr.size, sizeof(*ev));
		return;
	}
	if (ev->size < sizeof(*ev) || ev->size > m->hdr.size) {
		stress_err("session %d: event seq %u: kvmi_event.size %u, message %u bytes",
			   s->id, m->hdr.seq, ev->size, m->hdr.size);
		return;
	}
	if (!event_implemented(ev->event)) {
		stress_err("session %d: event seq %u: unknown event id %u", s->id,
			   m->hdr.seq, ev->event);
		return;
	}
	if (ev->vcpu >= sess_vcpus(s) ||
	    (ev->event == KVMI_EVENT_UNHOOK && ev->vcpu)) {
		stress_err("session %d: event %u seq %u from vCPU %u (the VM has %d)",
			   s->id, ev->event, m->hdr.seq, ev->vcpu, sess_vcpus(s));
		return;
	}
	if (!is_zero(ev->padding, sizeof(ev->padding)) ||
	    !is_zero(ev->arch.padding, sizeof(ev->arch.padding)))
		stress_err("session %d: event %u seq %u: padding not zero", s->id,
			   ev->event, m->hdr.seq);
	if (ev->event != KVMI_EVENT_UNHOOK && ev->arch.mode != 8)
		stress_err("session %d: event %u seq %u from vCPU %u: mode %u, the guest runs in 64-bit mode",
			   s->id, ev->event, m->hdr.seq, ev->vcpu, ev->arch.mode);
	if (!LOAD(s->fuzzed) && !(LOAD(s->asked) & (1u << ev->event))) {
		ADD(st.stale, 1);
		ADD(s->stale, 1);
		/* Once per iteration; the scenario reports the count. */
		if (__atomic_exchange_n(&stale_reported, LOAD(cur_iter),
					__ATOMIC_SEQ_CST) != LOAD(cur_iter))
			stress_err("session %d: event %u (seq %u) from vCPU %u, which this session's tool never enabled or asked for (state left by an earlier session)",
				   s->id, ev->event, m->hdr.seq, ev->vcpu);
	}
	if (m->hdr.size - ev->size != event_payload_size(ev->event))
		stress_err("session %d: event %u seq %u: payload of %u bytes, expected %d",
			   s->id, ev->event, m->hdr.seq, m->hdr.size - ev->size,
			   event_payload_size(ev->event));

	ADD(st.events, 1);
	ADD(s->events, 1);
	if (ev->event == KVMI_EVENT_UNHOOK) {
		ADD(s->unhook_events, 1);
		if (s->close_on_unhook)
			STORE(s->die_req, 1);
		return;
	}

	switch (LOAD(s->policy)) {
	case P_SILENT:
		return;
	case P_HOLD:
		if (ev->vcpu == LOAD(s->hold_vcpu) && !LOAD(s->held)) {
			memcpy(&s->held_msg, m, sizeof(m->hdr) + m->hdr.size);
			STORE(s->held, 1);
			return;
		}
		break;
	}

	len = make_reply(&r, m, KVMI_EVENT_ACTION_CONTINUE);
	if (LOAD(s->die_mode) == D_MID_REPLY && --s->die_after <= 0) {
		/* Dies in the middle of the reply. */
		q_put(s, &r, 1 + rnd(&s->rng, len - 1));
		STORE(s->die_req, 2);
		return;
	}
	if (q_put(s, &r, len))
		ADD(st.tx, 1);
}

static void check_reply(struct session *s, const struct kvmi_msg *m)
{
	uint32_t off = m->hdr.seq - SEQ_BASE, sent = 0;
	struct kvmi_error_code ec;
	bool again = false;

	pthread_mutex_lock(&s->qlock);
	if (off < SEQ_SLOTS && off < s->seq - SEQ_BASE) {
		sent = s->sent[off];
		again = sent & SENT_ANSWERED;
		s->sent[off] |= SENT_ANSWERED;
	}
	pthread_mutex_unlock(&s->qlock);

	if (!(sent & SENT_VALID)) {
		stress_err("session %d: message id %u seq %u size %u: no command was sent with that seq",
			   s->id, m->hdr.id, m->hdr.seq, m->hdr.size);
		return;
	}
	if ((sent & 0xffff) != m->hdr.id) {
		stress_err("session %d: reply id %u to command id %u (seq %u)",
			   s->id, m->hdr.id, sent & 0xffff, m->hdr.seq);
		return;
	}
	if (again) {
		stress_err("session %d: a second reply to command id %u seq %u",
			   s->id, m->hdr.id, m->hdr.seq);
		return;
	}
	if (m->hdr.size < sizeof(ec)) {
		stress_err("session %d: reply to command id %u seq %u: %u bytes",
			   s->id, m->hdr.id, m->hdr.seq, m->hdr.size);
		return;
	}
	memcpy(&ec, m->body, sizeof(ec));
	if (ec.padding || ec.err > 0 || (ec.err && m->hdr.size != sizeof(ec)))
		stress_err("session %d: reply to command id %u seq %u: err %d padding %u, %u bytes",
			   s->id, m->hdr.id, m->hdr.seq, ec.err, ec.padding,
			   m->hdr.size);
	ADD(s->replies, 1);
	if (m->hdr.id == KVMI_GET_VERSION && !ec.err) {
		struct kvmi_get_version_reply v;

		if (m->hdr.size != sizeof(ec) + sizeof(v)) {
			stress_err("session %d: GET_VERSION reply of %u bytes", s->id,
				   m->hdr.size);
			return;
		}
		memcpy(&v, m->body + sizeof(ec), sizeof(v));
		if (v.version != KVMI_VERSION || v.padding)
			stress_err("session %d: GET_VERSION: version %u padding %u",
				   s->id, v.version, v.padding);
		else if (m->hdr.seq == LOAD(s->probe_seq))
			STORE(s->probe_ok, 1);
	}
}

/* A reply to the (unknown) command id 1 looks like an event. */
static bool is_reply_to_id1(struct session *s, const struct kvmi_msg *m)
{
	uint32_t off = m->hdr.seq - SEQ_BASE;
	bool r = false;

	if (m->hdr.size != sizeof(struct kvmi_error_code))
		return false;
	pthread_mutex_lock(&s->qlock);
	if (off < SEQ_SLOTS && off < s->seq - SEQ_BASE)
		r = (s->sent[off] & (SENT_VALID | 0xffff)) == (SENT_VALID | KVMI_EVENT);
	pthread_mutex_unlock(&s->qlock);
	return r;
}

static void *reader_fn(void *arg)
{
	struct session *s = arg;
	struct kvmi_msg *m = malloc(sizeof(*m));
	int r;

	TEST_ASSERT(m, "malloc");
	while (!LOAD(s->rstop)) {
		struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
		int die = LOAD(s->die_req);

		if (die) {
			tool_die(s, die == 2);
			break;
		}
		if (LOAD(s->policy) == P_NOREAD) {
			sleep_ms(10);
			continue;
		}
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		r = read_exact(s->fd, &m->hdr, sizeof(m->hdr), 10000);
		if (!r && m->hdr.size > KVMI_MSG_SIZE) {
			stress_err("session %d: the kernel sent message id %u seq %u of %u bytes (> %zu)",
				   s->id, m->hdr.id, m->hdr.seq, m->hdr.size,
				   (size_t)KVMI_MSG_SIZE);
			STORE(s->bad_stream, 1);
			break;
		}
		if (!r)
			r = read_exact(s->fd, m->body, m->hdr.size, 10000);
		if (r == -EPIPE) {
			STORE(s->eof, 1);
			break;
		}
		if (r) {
			stress_err("session %d: the kernel sent part of a message (id %u seq %u size %u) and nothing more for 10 s",
				   s->id, m->hdr.id, m->hdr.seq, m->hdr.size);
			STORE(s->bad_stream, 1);
			break;
		}
		ADD(st.rx, 1);
		ADD(s->rx, 1);
		if (m->hdr.id == KVMI_EVENT && !is_reply_to_id1(s, m))
			check_event(s, m);
		else
			check_reply(s, m);
		if (LOAD(s->die_mode) == D_AFTER_MSGS && --s->die_after <= 0)
			STORE(s->die_req, 1);
	}
	free(m);
	return NULL;
}

static void sess_start_threads(struct session *s)
{
	int r;

	r = pthread_create(&s->writer, NULL, writer_fn, s);
	TEST_ASSERT(!r, "pthread_create: %s", strerror(r));
	r = pthread_create(&s->reader, NULL, reader_fn, s);
	TEST_ASSERT(!r, "pthread_create: %s", strerror(r));
	s->threads = true;
}

/* Stop the threads, close the socket if the tool didn't die, free. */
static void sess_free(struct session *s)
{
	if (s->threads) {
		STORE(s->rstop, 1);
		pthread_join(s->reader, NULL);
		if (!LOAD(s->died)) {
			STORE(s->wstop, 1);
			pthread_join(s->writer, NULL);
		}
	}
	if (s->fd >= 0)
		reg_close(s->fd);
	free(s->q);
	free(s->sent);
	free(s);
}

/* Wait until @flag is set (or the session ended, if @or_gone). */
static bool wait_flag(struct session *s, int *flag, int ms, bool or_gone)
{
	int64_t deadline = now_ms() + ms;

	while (!LOAD(*flag)) {
		if (or_gone && sess_gone(s))
			return false;
		if (now_ms() > deadline)
			return false;
		sleep_ms(2);
	}
	return true;
}

static bool wait_eof(struct session *s, int ms)
{
	int64_t deadline = now_ms() + ms;

	while (!sess_gone(s)) {
		if (now_ms() > deadline)
			return false;
		sleep_ms(2);
	}
	return true;
}

/*
 * Is the kernel still answering?  Replies back on (a fuzzed
 * CONTROL_CMD_RESPONSE may have turned them off), then GET_VERSION.
 * 1: answered, 0: the session ended, -1: no answer within @ms.
 */
static int sess_probe(struct session *s, int ms)
{
	struct kvmi_control_cmd_response cr = { .enable = 1, .now = 1 };
	uint8_t buf[sizeof(struct kvmi_msg_hdr)];
	int64_t deadline = now_ms() + ms;
	uint32_t seq;

	sess_cmd(s, KVMI_CONTROL_CMD_RESPONSE, &cr, sizeof(cr));
	seq = sess_seq(s, KVMI_GET_VERSION, true);
	STORE(s->probe_ok, 0);
	STORE(s->probe_seq, seq);
	if (q_put(s, buf, build_msg(buf, KVMI_GET_VERSION, 0, seq, NULL, 0)))
		ADD(st.tx, 1);
	for (;;) {
		if (LOAD(s->probe_ok))
			return 1;
		if (sess_gone(s))
			return 0;
		if (now_ms() > deadline)
			return -1;
		sleep_ms(2);
	}
}

/* ====================================================================== */
/* The main VM and session                                                 */
/* ====================================================================== */

static struct {
	struct vmctx *vm;
	struct session *s;
	struct rng rng;
} W;

/* A new socketpair, HOOK, allow-lists, tool threads.  NULL if HOOK failed. */
static struct session *sess_hook(struct vmctx *c)
{
	struct session *s;
	int sv[2], err;

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair: %s",
		    strerror(errno));
	err = do_hook(c->vm, sv[0]);
	/* The kernel holds its own reference: the VMM's copy can go. */
	close(sv[0]);
	if (err) {
		close(sv[1]);
		stress_err("KVM_INTROSPECTION_HOOK on VM %d: %s", c->gen,
			   strerror(-err));
		return NULL;
	}
	if (c->hooks++)
		ADD(st.reconnects, 1);
	s = sess_alloc(sv[1], c, 0);
	err = allow_all(c->vm);
	if (err)
		stress_err("allow-list ioctls after HOOK: %s", strerror(-err));
	sess_start_threads(s);
	return s;
}

enum { END_UNHOOK, END_PREUNHOOK, END_CLOSE };

/*
 * What a VMM does at the end of a session, each step bounded: optionally
 * PREUNHOOK (checked: on a healthy session it succeeds and the tool gets
 * the UNHOOK event), then UNHOOK; the tool must then read EOF.
 */
static void sess_end(struct vmctx *c, struct session *s, int how)
{
	bool healthy = !sess_gone(s) && LOAD(s->policy) != P_NOREAD;
	int64_t dur;
	int err;

	if (how == END_CLOSE && !sess_gone(s)) {
		STORE(s->die_req, 1);
		wait_flag(s, &s->died, 5000, false);
	}
	if (how == END_PREUNHOOK) {
		int before = LOAD(s->unhook_events);

		err = do_preunhook(c->vm, &dur);
		if (healthy && err)
			stress_err("session %d: PREUNHOOK with a healthy tool: %s",
				   s->id, strerror(-err));
		else if (!preunhook_err_ok(err))
			stress_err("session %d: PREUNHOOK: unexpected error %s",
				   s->id, strerror(-err));
		if (healthy && !err && s->unhook_enabled &&
		    !wait_flag(s, &s->unhook_events, EOF_MS, true) &&
		    LOAD(s->unhook_events) == before)
			stress_err("session %d: no UNHOOK event within %d s of PREUNHOOK",
				   s->id, EOF_MS / 1000);
	}
	err = do_unhook(c->vm);
	if (err)
		stress_err("session %d: UNHOOK: %s", s->id, strerror(-err));
	if (!wait_eof(s, EOF_MS))
		stress_err("session %d: the tool socket was not shut down within %d s of UNHOOK",
			   s->id, EOF_MS / 1000);
	sess_free(s);
}

static void world_make_vm(void)
{
	if (W.s) {
		sess_end(W.vm, W.s, END_UNHOOK);
		W.s = NULL;
	}
	if (W.vm)
		vm_free_ctx(W.vm);
	W.vm = vm_new(START_VCPUS);
	expect_progress(W.vm, PROGRESS_MS, "new VM");
}

/* A live session on a working VM, and its tool answering. */
static bool ensure_session(void)
{
	if (!W.vm || W.vm->broken)
		world_make_vm();
	if (W.s && (sess_gone(W.s) || W.s->seq - SEQ_BASE > SEQ_SLOTS / 2)) {
		sess_end(W.vm, W.s, END_UNHOOK);
		W.s = NULL;
	}
	if (!W.s)
		W.s = sess_hook(W.vm);
	if (!W.s)
		return false;
	STORE(W.s->policy, P_ANSWER);
	return true;
}

/* After a session ended badly: UNHOOK, reconnect, check it works. */
static void reconnect(int how)
{
	sess_end(W.vm, W.s, how);
	W.s = sess_hook(W.vm);
	if (W.s && sess_probe(W.s, PROBE_MS) != 1)
		stress_err("session %d: no reply to GET_VERSION after reconnecting",
			   W.s->id);
}

/* ====================================================================== */
/* Scenario: random and mutated messages                                   */
/* ====================================================================== */

struct cmd_shape {
	bool vcpu;
	uint16_t size;		/* after kvmi_vcpu_hdr */
};

static const struct cmd_shape shapes[KVMI_NUM_MESSAGES] = {
	[KVMI_GET_VERSION]	    = { false, 0 },
	[KVMI_CHECK_COMMAND]	    = { false, 8 },
	[KVMI_CHECK_EVENT]	    = { false, 8 },
	[KVMI_GET_GUEST_INFO]	    = { false, 0 },
	[KVMI_GET_VCPU_INFO]	    = { true, 0 },
	[KVMI_PAUSE_VCPU]	    = { true, 8 },
	[KVMI_CONTROL_VM_EVENTS]    = { false, 8 },
	[KVMI_CONTROL_EVENTS]	    = { true, 8 },
	[KVMI_CONTROL_CR]	    = { true, 8 },
	[KVMI_CONTROL_MSR]	    = { true, 8 },
	[KVMI_CONTROL_VE]	    = { true, 8 },
	[KVMI_GET_REGISTERS]	    = { true, 8 },
	[KVMI_SET_REGISTERS]	    = { true, sizeof(struct kvm_regs) },
	[KVMI_GET_CPUID]	    = { true, 8 },
	[KVMI_GET_XSAVE]	    = { true, 0 },
	[KVMI_READ_PHYSICAL]	    = { false, 16 },
	[KVMI_WRITE_PHYSICAL]	    = { false, 24 },
	[KVMI_INJECT_EXCEPTION]	    = { true, 16 },
	[KVMI_GET_PAGE_ACCESS]	    = { false, 16 },
	[KVMI_SET_PAGE_ACCESS]	    = { false, 24 },
	[KVMI_GET_MAP_TOKEN]	    = { false, 0 },
	[KVMI_GET_MTRR_TYPE]	    = { true, 8 },
	[KVMI_CONTROL_SPP]	    = { false, 8 },
	[KVMI_GET_PAGE_WRITE_BITMAP] = { false, 8 },
	[KVMI_SET_PAGE_WRITE_BITMAP] = { false, 8 },
	[KVMI_CONTROL_CMD_RESPONSE] = { false, 8 },
	[KVMI_GET_MAX_GFN]	    = { false, 0 },
};

static const uint32_t some_msrs[] = {
	0xc0000081, 0xc0000082, 0xc0000080, 0x174, 0x10, 0x1b, 0x277,
	0x40000000, 0xc0010000, 0xffffffff,
};

/* What a fuzzed message was, for the failure report. */
struct fuzz_rec {
	uint16_t id;
	uint16_t size;
	uint32_t seq;
	uint16_t vcpu;
	const char *kind;
};

#define FUZZ_HIST 8

struct fuzz_msg {
	uint8_t buf[sizeof(struct kvmi_msg_hdr) + KVMI_MSG_SIZE];
	size_t len;		/* bytes to write */
	bool disconnect;	/* the kernel must close the connection */
	struct fuzz_rec rec;
};

/* Plausible field values for command @id, then random mutations. */
static void fuzz_make(struct session *s, struct rng *r, struct fuzz_msg *f)
{
	struct kvmi_msg_hdr *hdr = (void *)f->buf;
	uint8_t *body = f->buf + sizeof(*hdr);
	int nv = sess_vcpus(s);
	uint32_t size = 0, i, seq;
	uint16_t id;
	uint8_t *req;
	bool vcpu;
	int pick = rnd(r, 100);

	memset(f, 0, offsetof(struct fuzz_msg, len));
	f->disconnect = false;
	f->rec.kind = "command";
	if (pick < 2)
		id = rng_next(r);		/* anything */
	else if (pick < 4)
		id = KVMI_EVENT;		/* unknown command 1 */
	else if (pick < 5)
		id = 28;			/* the unused one */
	else
		id = KVMI_GET_VERSION + rnd(r, KVMI_NUM_MESSAGES - KVMI_GET_VERSION);

	vcpu = id < KVMI_NUM_MESSAGES && shapes[id].vcpu;
	if (id < KVMI_NUM_MESSAGES)
		size = shapes[id].size;
	if (vcpu) {
		struct kvmi_vcpu_hdr *vh = (void *)body;

		vh->vcpu = rnd(r, nv);
		size += sizeof(*vh);
		req = body + sizeof(*vh);
		f->rec.vcpu = vh->vcpu;
	} else {
		req = body;
	}

	switch (id) {
	case KVMI_CHECK_COMMAND:
	case KVMI_CHECK_EVENT:
		*(uint16_t *)req = rnd(r, 40);
		break;
	case KVMI_PAUSE_VCPU:
		req[0] = chance(r, 20);
		break;
	case KVMI_CONTROL_VM_EVENTS:
	case KVMI_CONTROL_EVENTS:
		*(uint16_t *)req = rnd(r, KVMI_NUM_EVENTS + 2);
		req[2] = rnd(r, 2);
		break;
	case KVMI_CONTROL_CR: {
		static const uint32_t crs[] = { 0, 3, 4, 8, 2, 1, 5, 100 };

		req[0] = rnd(r, 2);
		*(uint32_t *)(req + 4) = crs[rnd(r, ARRAY_SIZE(crs))];
		break;
	}
	case KVMI_CONTROL_MSR:
		req[0] = rnd(r, 2);
		*(uint32_t *)(req + 4) = some_msrs[rnd(r, ARRAY_SIZE(some_msrs))];
		break;
	case KVMI_GET_REGISTERS: {
		uint16_t n = rnd(r, 6);

		*(uint16_t *)req = n;
		for (i = 0; i < n; i++)
			*(uint32_t *)(req + 8 + 4 * i) =
				some_msrs[rnd(r, ARRAY_SIZE(some_msrs))];
		/* Usually consistent with nmsrs, sometimes not. */
		size += 4 * (chance(r, 85) ? n : rnd(r, 8));
		break;
	}
	case KVMI_GET_CPUID: {
		static const uint32_t fns[] = { 0, 1, 7, 0xd, 0x80000000,
						0x80000001, 0x40000000 };

		*(uint32_t *)req = chance(r, 80) ? fns[rnd(r, ARRAY_SIZE(fns))] :
						   (uint32_t)rng_next(r);
		*(uint32_t *)(req + 4) = rnd(r, 3);
		break;
	}
	case KVMI_READ_PHYSICAL:
		*(uint64_t *)req = chance(r, 70) ? rnd(r, 64 << 20) :
						   rng_next(r);
		*(uint64_t *)(req + 8) = chance(r, 80) ? 1 + rnd(r, 4096) :
							 rnd(r, 9000);
		break;
	case KVMI_GET_MTRR_TYPE:
		*(uint64_t *)req = chance(r, 70) ? rnd(r, 1 << 30) :
						   rng_next(r);
		break;
	case KVMI_CONTROL_CMD_RESPONSE:
		req[0] = rnd(r, 2);
		req[1] = rnd(r, 2);
		break;
	}

	/* Mutations. */
	if (vcpu && chance(r, 10)) {
		struct kvmi_vcpu_hdr *vh = (void *)body;

		vh->vcpu = chance(r, 50) ? nv + rnd(r, 3) : (uint16_t)rng_next(r);
		f->rec.vcpu = vh->vcpu;
		f->rec.kind = "bad vCPU index";
	}
	if (chance(r, 12) && size) {
		/* Often a padding or reserved byte. */
		body[rnd(r, size)] ^= 1 + rnd(r, 255);
		f->rec.kind = "flipped byte";
	}
	if (chance(r, 5)) {
		for (i = 0; i < size; i++)
			body[i] = rng_next(r);
		f->rec.kind = "random payload";
	}
	if (chance(r, 8)) {
		int delta = rnd_range(r, -8, 16);

		size = (int)size + delta < 0 ? 0 : size + delta;
		for (i = 0; i < size && i < KVMI_MSG_SIZE; i++)
			if (!body[i] && chance(r, 10))
				body[i] = rng_next(r);
		f->rec.kind = "wrong size";
	} else if (chance(r, 2)) {
		size = rnd(r, KVMI_MSG_SIZE + 1);
		for (i = 0; i < size; i++)
			body[i] = rng_next(r);
		f->rec.kind = "random size";
	}

	seq = sess_seq(s, id, true);
	if (chance(r, 2)) {
		/* A stray event reply: no event has this seq. */
		id = KVMI_EVENT_REPLY;
		size = rnd(r, 64);
		for (i = 0; i < size; i++)
			body[i] = chance(r, 50) ? 0 : rng_next(r);
		f->disconnect = true;
		f->rec.kind = "stray event reply";
	} else if (chance(r, 1)) {
		/* Bigger than any message: only the header is sent. */
		size = KVMI_MSG_SIZE + 1 + rnd(r, 0xffff - KVMI_MSG_SIZE);
		f->disconnect = true;
		f->rec.kind = "oversized";
	}
	if (size > KVMI_MSG_SIZE && !f->disconnect)
		size = KVMI_MSG_SIZE;
	/* Any message with id 0 is an event reply, and a stray one. */
	if (id == KVMI_EVENT_REPLY)
		f->disconnect = true;

	hdr->id = id;
	hdr->size = size;
	hdr->seq = seq;
	f->len = sizeof(*hdr) + (size <= KVMI_MSG_SIZE ? size : 0);
	f->rec.id = id;
	f->rec.size = size;
	f->rec.seq = seq;
}

static void print_hist(struct fuzz_rec *h, int n)
{
	int i;

	stress_info("last messages the tool sent:");
	for (i = n > FUZZ_HIST ? n - FUZZ_HIST : 0; i < n; i++) {
		struct fuzz_rec *f = &h[i % FUZZ_HIST];

		stress_info("  id %u size %u seq 0x%x vcpu %u (%s)", f->id, f->size,
			    f->seq, f->vcpu, f->kind);
	}
}

static void sc_fuzz(struct rng *r)
{
	struct fuzz_rec hist[FUZZ_HIST];
	struct fuzz_msg *f = malloc(sizeof(*f));
	int n, i, sent = 0, res;
	bool truncate_and_die = chance(r, 12);
	bool disconnect = false;
	struct session *s;

	TEST_ASSERT(f, "malloc");
	if (!ensure_session())
		goto out;
	s = W.s;
	STORE(s->fuzzed, 1);
	n = 1 + rnd(r, opt.longrun ? 500 : 120);
	if (chance(r, 30))
		tool_control_event(s, rnd(r, sess_vcpus(s)), KVMI_EVENT_HYPERCALL, 1);

	for (i = 0; i < n; i++) {
		fuzz_make(s, r, f);
		hist[sent++ % FUZZ_HIST] = f->rec;
		if (!q_put(s, f->buf, f->len))
			break;
		ADD(st.tx, 1);
		if (f->disconnect) {
			disconnect = true;
			break;
		}
		/* Don't let the queue grow without bound. */
		while (q_len(s) > (64 << 10) && !sess_gone(s))
			sleep_ms(1);
		if (sess_gone(s))
			break;
	}
	stress_dbg("%d random messages, last: %s", sent, hist[(sent - 1) % FUZZ_HIST].kind);

	if (truncate_and_die && !disconnect && !sess_gone(s)) {
		/* A message cut short, then the tool is gone. */
		fuzz_make(s, r, f);
		if (f->len > sizeof(struct kvmi_msg_hdr) + 1) {
			size_t hl = sizeof(struct kvmi_msg_hdr);

			f->len = hl + rnd(r, f->len - hl);
			f->rec.kind = "truncated, then the tool died";
		} else {
			f->len = 1 + rnd(r, sizeof(struct kvmi_msg_hdr) - 1);
			f->rec.kind = "truncated header, then the tool died";
		}
		hist[sent++ % FUZZ_HIST] = f->rec;
		q_put(s, f->buf, f->len);
		STORE(s->die_req, 2);
		wait_flag(s, &s->died, 5000, false);
		expect_progress(W.vm, PROGRESS_MS, "after the tool died mid-message");
		reconnect(chance(r, 50) ? END_PREUNHOOK : END_UNHOOK);
		goto out;
	}
	if (disconnect) {
		if (!wait_eof(s, EOF_MS)) {
			stress_err("session %d: no disconnect within %d s after a protocol error (%s)",
				   s->id, EOF_MS / 1000, f->rec.kind);
			print_hist(hist, sent);
		} else {
			ADD(st.disconnects, 1);
		}
		expect_progress(W.vm, PROGRESS_MS, "after a protocol error");
		reconnect(END_UNHOOK);
		goto out;
	}
	if (sess_gone(s) && LOAD(s->bad_stream))
		goto out;

	res = sess_probe(s, PROBE_MS);
	if (res == 0) {
		stress_err("session %d: the kernel closed the connection after %d random messages without a protocol error from the tool",
			   s->id, sent);
		print_hist(hist, sent);
		reconnect(END_UNHOOK);
	} else if (res < 0) {
		stress_err("session %d: no reply to GET_VERSION within %d s after %d random messages",
			   s->id, PROBE_MS / 1000, sent);
		print_hist(hist, sent);
		dump_tasks(0, "no reply");
		reconnect(END_CLOSE);
	}
	expect_progress(W.vm, PROGRESS_MS, "after random messages");
out:
	free(f);
}

/* ====================================================================== */
/* Scenario: invalid event replies                                         */
/* ====================================================================== */

static const char *const bad_reply_names[] = {
	"wrong seq", "wrong vCPU", "bad vCPU index", "wrong event id",
	"bad action", "short", "oversized", "padding not zero", "duplicate",
	"mutated",
};

static void sc_bad_reply(struct rng *r)
{
	struct reply_msg *rm = calloc(1, sizeof(*rm));
	int kind = rnd(r, ARRAY_SIZE(bad_reply_names));
	bool hypercall = chance(r, 50);
	struct kvmi_event *ev;
	struct session *s;
	size_t len;
	int v, nv, i;

	TEST_ASSERT(rm, "malloc");
	if (!ensure_session())
		goto out;
	s = W.s;
	nv = sess_vcpus(s);
	v = rnd(r, nv);
	if (kind == 1 && nv < 2)
		kind = 0;

	STORE(s->held, 0);
	STORE(s->hold_vcpu, v);
	STORE(s->policy, P_HOLD);
	if (hypercall)
		tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 1);
	else
		tool_pause(s, v);
	if (!wait_flag(s, &s->held, PROGRESS_MS, true)) {
		if (!sess_gone(s)) {
			stress_err("session %d: no %s event from vCPU %d within %d s",
				   s->id, hypercall ? "HYPERCALL" : "PAUSE_VCPU", v,
				   PROGRESS_MS / 1000);
			dump_tasks(0, "no event");
		}
		reconnect(END_CLOSE);
		goto out;
	}
	ev = (void *)s->held_msg.body;
	stress_dbg("vCPU %d waits in event %u seq %u: reply %s", v, ev->event,
		   s->held_msg.hdr.seq, bad_reply_names[kind]);

	len = make_reply(rm, &s->held_msg, KVMI_EVENT_ACTION_CONTINUE);
	switch (kind) {
	case 0:
		rm->hdr.seq += 1 + rnd(r, 1000);
		break;
	case 1:
		rm->vh.vcpu = (v + 1 + rnd(r, nv - 1)) % nv;
		break;
	case 2:
		rm->vh.vcpu = nv + rnd(r, 0xffff - nv);
		break;
	case 3:
		rm->r.event = (ev->event + 1 + rnd(r, 254)) & 0xff;
		break;
	case 4:
		rm->r.action = 3 + rnd(r, 253);
		break;
	case 5:
		rm->hdr.size = rnd(r, sizeof(rm->vh) + sizeof(rm->r));
		len = sizeof(rm->hdr) + rm->hdr.size;
		break;
	case 6:
		rm->hdr.size += 8 * (1 + rnd(r, 16));
		if (chance(r, 20))
			rm->hdr.size = KVMI_MSG_SIZE;
		memset(rm->extra, 0, rm->hdr.size - sizeof(rm->vh) - sizeof(rm->r));
		len = sizeof(rm->hdr) + rm->hdr.size;
		break;
	case 7:
		switch (rnd(r, 4)) {
		case 0:
			rm->vh.padding1 = 1 + rnd(r, 0xfffe);
			break;
		case 1:
			rm->vh.padding2 = 1 + rnd(r, 0xfffffffe);
			break;
		case 2:
			rm->r.padding1 = 1 + rnd(r, 0xfffe);
			break;
		default:
			rm->r.padding2 = 1 + rnd(r, 0xfffffffe);
			break;
		}
		break;
	case 8:
		q_put(s, rm, len);
		ADD(st.tx, 1);
		break;
	case 9:
		/* Not the id: a reply must stay a reply. */
		for (i = 1 + rnd(r, 3); i; i--)
			((uint8_t *)rm)[2 + rnd(r, len - 2)] ^= 1 << rnd(r, 8);
		/* The header size decides how much the kernel reads. */
		len = sizeof(rm->hdr) + rm->hdr.size;
		if (rm->hdr.size > KVMI_MSG_SIZE)
			len = sizeof(rm->hdr);
		break;
	}
	STORE(s->policy, P_ANSWER);
	q_put(s, rm, len);
	ADD(st.tx, 1);

	if (kind == 9) {
		/* Valid or not: either the vCPU goes on or the tool is cut off. */
		if (sess_probe(s, PROBE_MS) < 0) {
			stress_err("session %d: no reply to GET_VERSION within %d s after a mutated event reply",
				   s->id, PROBE_MS / 1000);
			dump_tasks(0, "no reply");
		}
		if (sess_gone(s))
			ADD(st.disconnects, 1);
	} else if (!wait_eof(s, EOF_MS)) {
		stress_err("session %d: %s reply to event %u seq %u of vCPU %d: no disconnect within %d s",
			   s->id, bad_reply_names[kind], ev->event,
			   s->held_msg.hdr.seq, v, EOF_MS / 1000);
	} else {
		ADD(st.disconnects, 1);
	}
	expect_progress(W.vm, PROGRESS_MS, "after an invalid event reply");
	if (sess_gone(s))
		reconnect(chance(r, 30) ? END_PREUNHOOK : END_UNHOOK);
	else if (hypercall)
		tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 0);
out:
	free(rm);
}

/* ====================================================================== */
/* Scenario: the tool dies at a random point                               */
/* ====================================================================== */

/* Keep the vCPUs busy with events: HYPERCALL on some, PAUSE on all. */
static void busy_vcpus(struct session *s, struct rng *r)
{
	int v, nv = sess_vcpus(s), one = rnd(r, nv);

	for (v = 0; v < nv; v++) {
		/* On one vCPU at least: messages keep coming. */
		if (v == one || chance(r, 60))
			tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 1);
		for (int k = rnd(r, 4); k; k--)
			tool_pause(s, v);
	}
}

static void sc_tool_death(struct rng *r)
{
	static const char *const modes[] = {
		"after N messages", "in the middle of a reply",
		"while vCPUs wait for replies", "while not reading",
	};
	int mode = variant(r, SC_TOOL_DEATH, ARRAY_SIZE(modes));
	struct session *s;
	int wait;

	if (!ensure_session())
		return;
	s = W.s;
	if (chance(r, 50)) {
		tool_control_vm_event(s, KVMI_EVENT_UNHOOK, 1);
		s->close_on_unhook = chance(r, 50);
	}
	busy_vcpus(s, r);
	stress_dbg("tool dies %s", modes[mode]);

	switch (mode) {
	case 0:
		s->die_after = 1 + rnd(r, 40);
		STORE(s->die_mode, D_AFTER_MSGS);
		break;
	case 1:
		s->die_after = 1 + rnd(r, 8);
		STORE(s->die_mode, D_MID_REPLY);
		break;
	case 2:
	case 3:
		sleep_ms(rnd(r, 300));
		STORE(s->policy, mode == 2 ? P_SILENT : P_NOREAD);
		/* Make sure a vCPU is in an event when the tool dies. */
		tool_pause(s, rnd(r, sess_vcpus(s)));
		sleep_ms(50 + rnd(r, 700));
		STORE(s->die_req, 1);
		break;
	}
	wait = 20000;
	if (!wait_flag(s, &s->died, wait, false)) {
		/* No event for that long: the progress check says why. */
		STORE(s->die_req, 1);
		wait_flag(s, &s->died, 5000, false);
	}
	expect_progress(W.vm, PROGRESS_MS, "after the tool died");
	reconnect(chance(r, 50) ? END_PREUNHOOK : END_UNHOOK);
	if (W.s)
		expect_progress(W.vm, PROGRESS_MS, "after reconnecting");
}

/* ====================================================================== */
/* Scenario: the tool stops reading                                        */
/* ====================================================================== */

static void sc_stop_reading(struct rng *r)
{
	static const char *const ends[] = {
		"PREUNHOOK + UNHOOK", "UNHOOK", "the tool reads again",
	};
	int end = variant(r, SC_STOP_READING, ARRAY_SIZE(ends));
	int stall, sent = 0, v, err;
	struct session *s;
	int64_t t0, dur;

	if (!ensure_session())
		return;
	s = W.s;
	tool_control_vm_event(s, KVMI_EVENT_UNHOOK, 1);
	for (v = 0; v < sess_vcpus(s); v++)
		tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 1);
	if (sess_probe(s, PROBE_MS) != 1) {
		stress_err("session %d: no reply to GET_VERSION before the flood", s->id);
		reconnect(END_CLOSE);
		return;
	}

	/*
	 * Stop reading; flood commands until the socket takes no more: big
	 * replies (READ_PHYSICAL, from vCPU 0's thread; GET_REGISTERS, from
	 * each vCPU's) fill the tool's side, GET_VERSION is answered by the
	 * receiving thread, PAUSE_VCPU adds events.
	 */
	STORE(s->policy, P_NOREAD);
	t0 = now_ms();
	while (now_ms() - t0 < 3000 && sent < 20000) {
		int x = rnd(r, 100);

		if (x < 5) {
			tool_pause(s, rnd(r, sess_vcpus(s)));
		} else if (x < 25) {
			struct kvmi_read_physical req = {
				.gpa = rnd(r, 256) << 12, .size = 4096 };

			sess_cmd(s, KVMI_READ_PHYSICAL, &req, sizeof(req));
		} else if (x < 40) {
			struct kvmi_get_registers req = {};

			sess_vcpu_cmd(s, rnd(r, sess_vcpus(s)),
				      KVMI_GET_REGISTERS, &req, sizeof(req));
		} else {
			sess_cmd(s, KVMI_GET_VERSION, NULL, 0);
		}
		sent++;
		/* Not taken by the socket for a while: it is full. */
		if (q_len(s) > (4 << 10)) {
			sleep_ms(200);
			if (q_len(s) > (4 << 10))
				break;
		}
	}
	if (opt.longrun)
		stall = chance(r, 30) ? rnd_range(r, 20000, 30000) :
					rnd(r, 8000);
	else
		stall = chance(r, 40) ? rnd_range(r, 5500, 7000) :
					rnd(r, 1500);
	stress_info("  the tool stopped reading: %d commands queued (%zu bytes not accepted by the socket), stall %d ms, then %s",
		    sent, q_len(s), stall, ends[end]);
	ADD(st.stalls, 1);
	sleep_ms(stall);

	switch (end) {
	case 0:
		err = do_preunhook(W.vm->vm, &dur);
		if (!preunhook_err_ok(err))
			stress_err("session %d: PREUNHOOK with a tool that doesn't read: unexpected error %s",
				   s->id, strerror(-err));
		stress_dbg("PREUNHOOK: %s after %lld ms", err ? strerror(-err) : "0",
			   (long long)dur);
		fallthrough;
	case 1:
		err = do_unhook(W.vm->vm);
		if (err)
			stress_err("session %d: UNHOOK: %s", s->id, strerror(-err));
		expect_progress(W.vm, PROGRESS_MS, "after UNHOOK of a tool that doesn't read");
		STORE(s->die_req, 1);
		wait_flag(s, &s->died, 5000, false);
		sess_free(s);
		W.s = sess_hook(W.vm);
		if (W.s && sess_probe(W.s, PROBE_MS) != 1)
			stress_err("session %d: no reply to GET_VERSION after reconnecting",
				   W.s->id);
		break;
	case 2:
		STORE(s->policy, P_ANSWER);
		err = sess_probe(s, PROBE_MS + stall);
		if (err < 0) {
			stress_err("session %d: the tool reads again, but no reply to GET_VERSION within %d s",
				   s->id, (PROBE_MS + stall) / 1000);
			dump_tasks(0, "no reply");
		}
		expect_progress(W.vm, PROGRESS_MS, "after the tool read again");
		if (err != 1) {
			if (err == 0)
				stress_dbg("the kernel disconnected the tool that stopped reading");
			reconnect(err < 0 ? END_CLOSE : END_UNHOOK);
		} else {
			for (v = 0; v < sess_vcpus(s); v++)
				tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 0);
		}
		break;
	}
	expect_progress(W.vm, PROGRESS_MS, "after the tool stopped reading");
}

/* ====================================================================== */
/* Scenario: HOOK / PREUNHOOK / UNHOOK / allow-lists / vCPU create races   */
/* ====================================================================== */

struct race {
	struct vmctx *c;
	int stop;
	pthread_mutex_t lock;
	struct session *sess[128];
	int nsess;
	int vcpus_to_add;
};

struct race_thread {
	struct race *race;
	int kind;
	struct rng rng;
	pthread_t thread;
	uint64_t ops;
};

enum { R_HOOK, R_UNHOOK, R_PREUNHOOK, R_ALLOW, R_VCPU, R_KILL, NR_RACE };

/* A new session's tool asks for everything that makes events. */
static void race_tool_start(struct session *s, struct rng *r)
{
	int v;

	if (chance(r, 70))
		tool_control_vm_event(s, KVMI_EVENT_UNHOOK, 1);
	if (chance(r, 70))
		tool_control_vm_event(s, KVMI_EVENT_CREATE_VCPU, 1);
	for (v = 0; v < sess_vcpus(s); v++) {
		if (chance(r, 50))
			tool_control_event(s, v, KVMI_EVENT_HYPERCALL, 1);
		if (chance(r, 70))
			tool_pause(s, v);
	}
	s->close_on_unhook = chance(r, 50);
}

static void *race_fn(void *arg)
{
	struct race_thread *t = arg;
	struct race *race = t->race;
	struct kvm_vm *vm = race->c->vm;
	int err, sv[2];

	/* Sessions must live long enough for their tools to get events. */
	static const int pause_ms[NR_RACE] = {
		[R_HOOK] = 25, [R_UNHOOK] = 150, [R_PREUNHOOK] = 80,
		[R_ALLOW] = 60, [R_VCPU] = 100, [R_KILL] = 100,
	};

	while (!LOAD(race->stop)) {
		sleep_ms(rnd(&t->rng, pause_ms[t->kind]));
		switch (t->kind) {
		case R_HOOK: {
			struct session *s;

			if (race->nsess >= (int)ARRAY_SIZE(race->sess) ||
			    opt.no_hook_races)
				continue;
			TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv),
				    "socketpair");
			err = do_hook(vm, sv[0]);
			close(sv[0]);
			if (err) {
				close(sv[1]);
				if (err != -EEXIST)
					stress_err("racing HOOK: %s", strerror(-err));
				break;
			}
			race->c->hooks++;
			ADD(st.reconnects, 1);
			s = sess_alloc(sv[1], race->c, 0);
			err = do_feature(vm, true, 1, -1);
			if (!err)
				err = do_feature(vm, false, 1, -1);
			if (err && err != -EFAULT)
				stress_err("racing allow-list ioctl after HOOK: %s",
					   strerror(-err));
			sess_start_threads(s);
			race_tool_start(s, &t->rng);
			pthread_mutex_lock(&race->lock);
			race->sess[race->nsess++] = s;
			pthread_mutex_unlock(&race->lock);
			break;
		}
		case R_UNHOOK:
			err = do_unhook(vm);
			if (err && err != -ENOENT)
				stress_err("racing UNHOOK: %s", strerror(-err));
			break;
		case R_PREUNHOOK:
			err = do_preunhook(vm, NULL);
			if (!preunhook_err_ok(err))
				stress_err("racing PREUNHOOK: %s", strerror(-err));
			break;
		case R_ALLOW: {
			bool command = chance(&t->rng, 50);
			int id = chance(&t->rng, 20) ? -1 :
				 (int)rnd(&t->rng, command ? 31 : 13);

			err = do_feature(vm, command, chance(&t->rng, 60), id);
			if (err && err != -EFAULT && err != -EINVAL &&
			    err != -EPERM)
				stress_err("racing allow-list ioctl: %s", strerror(-err));
			break;
		}
		case R_VCPU:
			if (!race->vcpus_to_add || !chance(&t->rng, 15))
				continue;
			race->vcpus_to_add--;
			vcpu_add(race->c);
			ADD(st.vcpus_added, 1);
			break;
		case R_KILL: {
			struct session *s = NULL;

			if (!chance(&t->rng, 30))
				continue;
			/* The newest session still alive, if any. */
			pthread_mutex_lock(&race->lock);
			for (int k = race->nsess - 1; k >= 0 && !s; k--)
				if (!sess_gone(race->sess[k]))
					s = race->sess[k];
			pthread_mutex_unlock(&race->lock);
			if (!s)
				continue;
			STORE(s->die_req, chance(&t->rng, 50) ? 1 : 2);
			break;
		}
		}
		t->ops++;
		ADD(st.races, 1);
	}
	return NULL;
}

static void sc_races(struct rng *r)
{
	struct race race = {};
	struct race_thread t[NR_RACE];
	int i, err, dur;

	/* May make a new VM: W.vm only after it. */
	if (!ensure_session())
		return;
	race.c = W.vm;
	pthread_mutex_init(&race.lock, NULL);
	/* The race threads own every session from here. */
	sess_end(W.vm, W.s, END_UNHOOK);
	W.s = NULL;
	if (opt.no_hook_races)
		stress_dbg("control run: no HOOK in the race");

	race.vcpus_to_add = MAX_VCPUS - LOAD(W.vm->nr);
	if (race.vcpus_to_add > 2)
		race.vcpus_to_add = 2;
	dur = opt.longrun ? rnd_range(r, 1000, 8000) : rnd_range(r, 800, 2000);
	for (i = 0; i < NR_RACE; i++) {
		t[i] = (struct race_thread){ .race = &race, .kind = i };
		rng_seed(&t[i].rng, rng_next(r), i);
		TEST_ASSERT(!pthread_create(&t[i].thread, NULL, race_fn, &t[i]),
			    "pthread_create");
	}
	sleep_ms(dur);
	STORE(race.stop, 1);
	for (i = 0; i < NR_RACE; i++)
		pthread_join(t[i].thread, NULL);

	err = do_unhook(W.vm->vm);
	if (err && err != -ENOENT)
		stress_err("UNHOOK after the race: %s", strerror(-err));
	for (i = 0; i < race.nsess; i++) {
		struct session *s = race.sess[i];

		if (!wait_eof(s, EOF_MS))
			stress_err("race session %d: the tool socket was not shut down within %d s of the last UNHOOK",
				   s->id, EOF_MS / 1000);
		sess_free(s);
	}
	stress_dbg("race: %d ms, %d sessions, ops: hook %llu unhook %llu preunhook %llu allow %llu vcpu %llu kill %llu",
		   dur, race.nsess, (unsigned long long)t[R_HOOK].ops,
		   (unsigned long long)t[R_UNHOOK].ops,
		   (unsigned long long)t[R_PREUNHOOK].ops,
		   (unsigned long long)t[R_ALLOW].ops,
		   (unsigned long long)t[R_VCPU].ops,
		   (unsigned long long)t[R_KILL].ops);
	expect_progress(W.vm, PROGRESS_MS, "after the HOOK/UNHOOK race");
	pthread_mutex_destroy(&race.lock);
}

/* ====================================================================== */
/* Scenario: the VM is destroyed while commands are in flight              */
/* ====================================================================== */

/* What the flooding tool sends. */
enum {
	FL_ALL,		/* VM and vCPU commands, PAUSE_VCPU included */
	FL_JOBS,	/* the same without PAUSE_VCPU */
	FL_VM,		/* VM commands only: no vCPU job */
};

/*
 * At most this many commands without a reply while the vCPUs run: the
 * kernel handles the tool's messages in order, so an event reply queued
 * behind a deep backlog would keep its vCPU waiting for seconds.
 */
#define FLOOD_WINDOW	64

struct flood {
	struct session *s;
	struct rng rng;
	int stop;
	int mode;
	int unbounded;		/* no window: the vCPUs are stopped */
	uint64_t n;
	uint64_t replies0;
	pthread_t thread;
};

/* Valid commands as fast as the kernel takes them, until told to stop. */
static void *flood_fn(void *arg)
{
	struct flood *fl = arg;
	struct session *s = fl->s;

	while (!LOAD(fl->stop) && !sess_gone(s)) {
		int v = rnd(&fl->rng, sess_vcpus(s));
		int mode = LOAD(fl->mode);
		uint32_t ok = 1;

		switch (mode == FL_VM ? rnd(&fl->rng, 3) : rnd(&fl->rng, 8)) {
		case 0:
			ok = sess_cmd(s, KVMI_GET_VERSION, NULL, 0);
			break;
		case 1:
			ok = sess_cmd(s, KVMI_GET_GUEST_INFO, NULL, 0);
			break;
		case 2:
			ok = sess_cmd(s, KVMI_GET_MAX_GFN, NULL, 0);
			break;
		case 3: {
			/* A VM command, but run by vCPU 0's thread. */
			struct kvmi_read_physical req = {
				.gpa = rnd(&fl->rng, 1 << 20), .size = 64 };

			ok = sess_cmd(s, KVMI_READ_PHYSICAL, &req, sizeof(req));
			break;
		}
		case 4: {
			struct kvmi_get_registers req = {};

			ok = sess_vcpu_cmd(s, v, KVMI_GET_REGISTERS, &req,
					   sizeof(req));
			break;
		}
		case 5:
			if (mode == FL_ALL)
				tool_pause(s, v);
			break;
		case 6:
			ok = sess_vcpu_cmd(s, v, KVMI_GET_VCPU_INFO, NULL, 0);
			break;
		default: {
			struct kvmi_get_cpuid req = { .function = 1 };

			ok = sess_vcpu_cmd(s, v, KVMI_GET_CPUID, &req,
					   sizeof(req));
			break;
		}
		}
		if (!ok)
			break;
		fl->n++;
		if (q_len(s) > (32 << 10))
			sleep_ms(1);
		while (!LOAD(fl->unbounded) && !LOAD(fl->stop) && !sess_gone(s) &&
		       fl->n > LOAD(s->replies) - fl->replies0 + FLOOD_WINDOW)
			sleep_ms(1);
	}
	return NULL;
}

static void flood_start(struct flood *fl, struct session *s, int mode,
			uint64_t seed)
{
	*fl = (struct flood){ .s = s, .mode = mode,
			      .replies0 = LOAD(s->replies) };
	rng_seed(&fl->rng, seed, 77);
	TEST_ASSERT(!pthread_create(&fl->thread, NULL, flood_fn, fl),
		    "pthread_create");
}

static void flood_stop(struct flood *fl)
{
	STORE(fl->stop, 1);
	pthread_join(fl->thread, NULL);
}

static void sc_vm_destroy(struct rng *r)
{
	/*
	 * jobs: the VMM stops its vCPUs while the tool keeps sending vCPU
	 * commands; vm: only VM commands meanwhile (vCPU commands resume
	 * once the vCPUs are out, and wait as jobs when the VM goes).
	 */
	bool jobs = variant(r, SC_VM_DESTROY, 2) == 0;
	struct session *s;
	struct flood fl;
	uint64_t rx0;
	int i, n;

	if (!ensure_session())
		return;
	s = W.s;
	busy_vcpus(s, r);
	flood_start(&fl, s, FL_ALL, rng_next(r));
	sleep_ms(rnd(r, 400));

	/*
	 * The tool keeps answering events, so the vCPU threads can leave
	 * KVM_RUN.  No new PAUSE_VCPU meanwhile: a vCPU serves every pending
	 * pause request (at most 16) before it looks at signals.
	 */
	STORE(fl.mode, jobs ? FL_JOBS : FL_VM);
	n = LOAD(W.vm->nr);
	stress_dbg("stopping %d vCPUs while the tool sends %s", n,
		   jobs ? "vCPU commands" : "VM commands");
	for (i = 0; i < n; i++) {
		rx0 = LOAD(s->rx);
		if (vcpu_stop(&W.vm->w[i], VCPU_STOP_MS))
			continue;
		stress_err("vCPU %d (thread %d) did not leave KVM_RUN within %d s of signal + immediate_exit while the tool sent %s (the tool received %llu messages meanwhile)",
			   i, LOAD(W.vm->w[i].tid), VCPU_STOP_MS / 1000,
			   jobs ? "vCPU commands" : "VM commands only",
			   (unsigned long long)(LOAD(s->rx) - rx0));
		dump_tasks(0, "vCPU does not stop");
		stress_info("recovering: shutting every tool socket down");
		reg_shutdown_all();
		if (!vcpu_stop(&W.vm->w[i], RECOVER_MS))
			finish(true);
	}
	/* Commands, and vCPU jobs that no vCPU runs: destroy the VM under them. */
	STORE(fl.mode, FL_ALL);
	STORE(fl.unbounded, 1);
	sleep_ms(rnd(r, 200));
	vm_close_stats(W.vm);
	i = wd_begin("destroying a hooked VM (kvm_vm_free)", DESTROY_MS);
	kvm_vm_free(W.vm->vm);
	wd_end(i);
	ADD(st.vm_destroys, 1);

	if (!wait_eof(s, EOF_MS))
		stress_err("session %d: the tool socket was not shut down within %d s of the VM's destruction",
			   s->id, EOF_MS / 1000);
	flood_stop(&fl);
	stress_dbg("VM %d destroyed under %llu commands", W.vm->gen,
		   (unsigned long long)fl.n);
	sess_free(s);
	W.s = NULL;
	free(W.vm);
	W.vm = NULL;
	world_make_vm();
}

/* ====================================================================== */
/* Scenario: the VMM process dies while its vCPUs wait for replies         */
/* ====================================================================== */

static void close_other_fds(int keep1, int keep2)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fds[1024], n = 0, i;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && n < 1024)
			fds[n++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (i = 0; i < n; i++)
		if (fds[i] > 2 && fds[i] != keep1 && fds[i] != keep2)
			close(fds[i]);
}

/* The VMM child: a VM hooked to @fd, 2 vCPUs running; exits or is killed. */
static void __noreturn vmm_child(pid_t parent, int fd, int ready_fd,
				 int exit_after_ms)
{
	struct vmctx *c;
	char byte = 'R';
	int err;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	/* Another thread of the parent may have held it at fork(). */
	pthread_mutex_init(&out_lock, NULL);
	close_other_fds(fd, ready_fd);
	alarm(120);
	c = vm_new(START_VCPUS);
	err = hook_fd(c->vm, fd) ? -errno : 0;
	close(fd);
	if (!err)
		err = allow_all(c->vm);
	if (err)
		byte = 'H';
	else if (!expect_progress(c, PROGRESS_MS, "VMM child"))
		byte = 'P';
	if (write(ready_fd, &byte, 1) != 1 || byte != 'R')
		_exit(1);
	if (exit_after_ms) {
		sleep_ms(exit_after_ms);
		/* exit_group(): the vCPU threads die in their waits. */
		_exit(0);
	}
	for (;;)
		pause();
}

/*
 * VMM children are forked by a helper process started before any VM
 * exists: fork() from this process, with a VM running, would make its
 * guest memory copy-on-write under the running vCPUs.
 */
static int fork_server_fd = -1;

static void __noreturn fork_server(int sock)
{
	pid_t me = getpid();

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Children are reaped by the kernel; the test polls a pidfd. */
	signal(SIGCHLD, SIG_IGN);
	for (;;) {
		char cbuf[CMSG_SPACE(2 * sizeof(int))];
		int exit_after, fds[2];
		struct iovec iov = { &exit_after, sizeof(exit_after) };
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
		};
		struct cmsghdr *cm;
		pid_t pid;

		if (recvmsg(sock, &mh, 0) != sizeof(exit_after))
			_exit(0);
		cm = CMSG_FIRSTHDR(&mh);
		if (!cm || cm->cmsg_type != SCM_RIGHTS)
			_exit(1);
		memcpy(fds, CMSG_DATA(cm), sizeof(fds));
		pid = fork();
		if (!pid) {
			close(sock);
			signal(SIGCHLD, SIG_DFL);
			vmm_child(me, fds[0], fds[1], exit_after);
		}
		close(fds[0]);
		close(fds[1]);
		if (send(sock, &pid, sizeof(pid), 0) != sizeof(pid))
			_exit(1);
	}
}

static void fork_server_start(void)
{
	int sv[2];
	pid_t pid;

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), "socketpair");
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		close(sv[0]);
		fork_server(sv[1]);
	}
	close(sv[1]);
	fork_server_fd = sv[0];
}

/* A VMM child hooked to @hook_fd; returns its pid (-1 on failure). */
static pid_t spawn_vmm(int hook_fd, int ready_fd, int exit_after)
{
	char cbuf[CMSG_SPACE(2 * sizeof(int))] = {};
	struct iovec iov = { &exit_after, sizeof(exit_after) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int fds[2] = { hook_fd, ready_fd };
	pid_t pid;

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	if (sendmsg(fork_server_fd, &mh, 0) != sizeof(exit_after) ||
	    recv(fork_server_fd, &pid, sizeof(pid), 0) != sizeof(pid))
		return -1;
	return pid;
}

/* Wait (bounded) until process @pidfd is gone: its VM is destroyed then. */
static bool wait_process_gone(int pidfd, int ms)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
	int64_t deadline = now_ms() + ms;

	for (;;) {
		int64_t left = deadline - now_ms();
		int n;

		if (left < 0)
			return false;
		n = poll(&pfd, 1, left > 100 ? 100 : (int)left);
		if (n > 0)
			return true;
		TEST_ASSERT(n == 0 || errno == EINTR, "poll(pidfd): %s",
			    strerror(errno));
	}
}

static void sc_vmm_killed(struct rng *r)
{
	static const char *const how_names[] = { "SIGKILL", "SIGTERM", "exits" };
	int how = rnd(r, 3), sv[2], ready[2], exit_after = 0, pidfd;
	bool flooding = false;
	struct session *s;
	struct flood fl;
	char byte = 0;
	pid_t pid;

	if (how == 2)
		exit_after = 100 + rnd(r, 700);
	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
	TEST_ASSERT(!pipe(ready), "pipe");
	fflush(stdout);
	pid = spawn_vmm(sv[0], ready[1], exit_after);
	TEST_ASSERT(pid > 0, "the fork helper did not start a VMM child");
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	TEST_ASSERT(pidfd >= 0, "pidfd_open: %s", strerror(errno));
	close(sv[0]);
	close(ready[1]);

	s = sess_alloc(sv[1], NULL, START_VCPUS);
	{
		struct pollfd pfd = { .fd = ready[0], .events = POLLIN };

		if (poll(&pfd, 1, 90000) != 1 || read(ready[0], &byte, 1) != 1)
			byte = 0;
	}
	close(ready[0]);
	if (byte != 'R') {
		stress_err("the VMM child did not get ready (status '%c'): %s", byte ? byte : '-',
			   byte == 'H' ? "HOOK or allow-list ioctl failed" :
			   byte == 'P' ? "its vCPUs made no progress" : "no answer");
		kill(pid, SIGKILL);
		wait_process_gone(pidfd, DESTROY_MS);
		close(pidfd);
		sess_free(s);
		return;
	}
	sess_start_threads(s);
	tool_control_vm_event(s, KVMI_EVENT_UNHOOK, chance(r, 50));
	busy_vcpus(s, r);
	/* A tool busy with commands when the VMM dies. */
	flooding = chance(r, 40);
	if (flooding)
		flood_start(&fl, s, FL_ALL, rng_next(r));
	sleep_ms(rnd(r, 500));
	if (chance(r, 60)) {
		/* The vCPUs will wait for replies that never come. */
		STORE(s->policy, P_SILENT);
		tool_pause(s, 0);
		tool_pause(s, 1);
		sleep_ms(50 + rnd(r, 300));
	}
	if (how < 2)
		kill(pid, how ? SIGTERM : SIGKILL);
	stress_dbg("VMM child %d: %s%s", pid, how_names[how],
		   flooding ? ", the tool flooding commands" : "");

	if (!wait_process_gone(pidfd, DESTROY_MS + exit_after)) {
		stress_err("the VMM child (%s%s) did not exit within %d s: VM teardown is stuck",
			   how_names[how],
			   flooding ? ", its tool flooding commands" : "",
			   DESTROY_MS / 1000);
		dump_tasks(pid, "VMM child");
		stress_info("recovering: shutting every tool socket down");
		reg_shutdown_all();
		kill(pid, SIGKILL);
		if (!wait_process_gone(pidfd, RECOVER_MS))
			finish(true);
	}
	close(pidfd);
	ADD(st.vmm_deaths, 1);
	ADD(st.vm_destroys, 1);
	if (!wait_eof(s, EOF_MS))
		stress_err("session %d: the tool socket was not shut down within %d s of the VMM's death",
			   s->id, EOF_MS / 1000);
	if (flooding)
		flood_stop(&fl);
	sess_free(s);
}

/* ====================================================================== */
/* Scenario: UNHOOK and HOOK back to back, while the vCPUs are busy        */
/* ====================================================================== */

/*
 * Session A enables HYPERCALL events on every vCPU, pauses some, maybe
 * enables CREATE_VCPU (and a vCPU is created); the VMM unhooks A and
 * hooks B right away.  B asks for nothing: any event it gets is state
 * that A left behind (checked by B's reader).  Then B plays A.
 */
static void sc_rehook(struct rng *r)
{
	int rounds = opt.longrun ? rnd_range(r, 10, 60) : rnd_range(r, 4, 12);
	uint64_t stale0 = LOAD(st.stale);
	int i, v, err;

	if (!ensure_session())
		return;
	for (i = 0; i < rounds && W.s; i++) {
		struct session *a = W.s;

		for (v = 0; v < sess_vcpus(a); v++) {
			tool_control_event(a, v, KVMI_EVENT_HYPERCALL, 1);
			if (chance(r, 50))
				tool_pause(a, v);
		}
		if (chance(r, 30))
			tool_control_vm_event(a, KVMI_EVENT_CREATE_VCPU, 1);
		sleep_ms(rnd(r, 40));
		if (LOAD(W.vm->nr) < MAX_VCPUS && chance(r, 15)) {
			vcpu_add(W.vm);
			ADD(st.vcpus_added, 1);
		}
		err = do_unhook(W.vm->vm);
		if (err)
			stress_err("session %d: UNHOOK: %s", a->id, strerror(-err));
		W.s = sess_hook(W.vm);
		ADD(st.rehooks, 1);
		if (!wait_eof(a, EOF_MS))
			stress_err("session %d: the tool socket was not shut down within %d s of UNHOOK",
				   a->id, EOF_MS / 1000);
		sess_free(a);
		/* B asked for nothing yet: give stale events time to come. */
		sleep_ms(20 + rnd(r, 150));
	}
	if (LOAD(st.stale) != stale0)
		stress_info("  %llu events reached sessions that never asked for them",
			    (unsigned long long)(LOAD(st.stale) - stale0));
	expect_progress(W.vm, PROGRESS_MS, "after UNHOOK + HOOK rounds");
}

/* ====================================================================== */
/* main                                                                    */
/* ====================================================================== */

static void finish(bool fatal)
{
	int i, n = 0;

	pthread_mutex_lock(&out_lock);
	if (finished) {
		pthread_mutex_unlock(&out_lock);
		if (fatal)
			for (;;)
				pause();
		return;
	}
	finished = 1;
	pthread_mutex_unlock(&out_lock);

	for (i = 0; i < NR_SCEN; i++)
		n += scen[i].runs;
	scen[SC_SETUP].runs = 1;
	stress_info("INFO: stress: seed %llu, %d iterations, %llu messages, %llu reconnects, %llu deaths, %llu races, in %lld s",
		    (unsigned long long)opt.seed, n,
		    (unsigned long long)(LOAD(st.tx) + LOAD(st.rx)),
		    (unsigned long long)LOAD(st.reconnects),
		    (unsigned long long)(LOAD(st.tool_deaths) + LOAD(st.vmm_deaths)),
		    (unsigned long long)LOAD(st.races),
		    (long long)((now_ms() - t_start + 500) / 1000));
	stress_info("INFO: stress: messages %llu sent / %llu received, %llu events (%llu stale), %llu protocol-error disconnects, %llu tool deaths, %llu VMM deaths, %llu VM destroys, %llu back-to-back rehooks, %llu stalls, %llu vCPUs hot-added, %llu CRASH actions",
		    (unsigned long long)LOAD(st.tx), (unsigned long long)LOAD(st.rx),
		    (unsigned long long)LOAD(st.events),
		    (unsigned long long)LOAD(st.stale),
		    (unsigned long long)LOAD(st.disconnects),
		    (unsigned long long)LOAD(st.tool_deaths),
		    (unsigned long long)LOAD(st.vmm_deaths),
		    (unsigned long long)LOAD(st.vm_destroys),
		    (unsigned long long)LOAD(st.rehooks),
		    (unsigned long long)LOAD(st.stalls),
		    (unsigned long long)LOAD(st.vcpus_added),
		    (unsigned long long)LOAD(st.crashes));
	if (nfails)
		stress_info("rerun with: kvmi_stress -s %llu -n %d -t %d%s",
			    (unsigned long long)opt.seed, opt.iterations, opt.seconds,
			    opt.longrun ? " -l" : "");

	pthread_mutex_lock(&out_lock);
	for (i = 0; i <= NR_SCEN; i++) {
		struct scen *sc = &scen[i];

		if (sc->fails) {
			for (int k = 0; k < sc->fails && k < 2; k++)
				printf("# %s\n", sc->first[k]);
			ksft_test_result_fail("%s: %d failures in %d runs\n",
					      sc->name, sc->fails, sc->runs);
		} else if (!sc->runs) {
			/* "ok N name # SKIP reason": the name stays the name. */
			printf("ok %u %s # SKIP not run: %s\n", ksft_test_num() + 1,
			       sc->name, !(opt.mask & (1u << i)) ?
			       "excluded with -m" :
			       "the iteration or time limit came first");
			ksft_inc_xskip_cnt();
		} else {
			ksft_test_result_pass("%s: %d runs\n", sc->name, sc->runs);
		}
	}
	if (fatal)
		printf("# the test stopped early: a hang could not be recovered\n");
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	if (fatal) {
		ksft_print_cnts();
		_exit(KSFT_FAIL);
	}
}

static void print_help(const char *prog)
{
	printf("usage: %s [-s seed] [-n iterations] [-t seconds] [-l] [-v] [-m mask]\n"
	       "  -s  PRNG seed (default: time-based; printed)\n"
	       "  -n  iterations (default %d)\n"
	       "  -t  stop starting iterations after this many seconds (default %d)\n"
	       "  -l  long mode: longer bursts, stalls and races (make stress)\n"
	       "  -v  print each iteration's details\n"
	       "  -H  control: the race scenario never hooks (vCPU creation and\n"
	       "      the other VMM ioctls still race)\n"
	       "  -m  bitmask of scenarios to run (default all):\n",
	       prog, opt.iterations, opt.seconds);
	for (int i = 0; i < NR_SCEN; i++)
		printf("      0x%02x %s\n", 1 << i, scen[i].name);
	exit(KSFT_FAIL);
}

static int pick_scenario(struct rng *r, int *order, int iter)
{
	int total = 0, i, x;

	/* First each scenario once, in a seeded order; then by weight. */
	for (i = 0; i < NR_SCEN; i++) {
		if ((opt.mask & (1u << order[i])) && !scen[order[i]].runs)
			return order[i];
	}
	for (i = 0; i < NR_SCEN; i++)
		if (opt.mask & (1u << i))
			total += scen[i].weight;
	x = rnd(r, total);
	for (i = 0; i < NR_SCEN; i++) {
		if (!(opt.mask & (1u << i)))
			continue;
		if (x < scen[i].weight)
			return i;
		x -= scen[i].weight;
	}
	return SC_FUZZ;
}

int main(int argc, char *argv[])
{
	struct sigaction sa = { .sa_handler = sigusr1_handler };
	int order[NR_SCEN], i, c, fd, cap;
	bool seeded = false;
	pthread_t wd_thread;
	int64_t end;

	while ((c = getopt(argc, argv, "s:n:t:lvm:Hh")) != -1) {
		switch (c) {
		case 's':
			opt.seed = strtoull(optarg, NULL, 0);
			seeded = true;
			break;
		case 'n':
			opt.iterations = atoi(optarg);
			break;
		case 't':
			opt.seconds = atoi(optarg);
			break;
		case 'l':
			opt.longrun = true;
			break;
		case 'v':
			opt.verbose = true;
			break;
		case 'm':
			opt.mask = strtoul(optarg, NULL, 0);
			break;
		case 'H':
			opt.no_hook_races = true;
			break;
		default:
			print_help(argv[0]);
		}
	}
	if (!seeded) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		opt.seed = (uint64_t)ts.tv_sec * 1000003u ^ ts.tv_nsec ^ getpid();
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	t_start = now_ms();

	ksft_print_header();
	ksft_set_plan(NR_SCEN + 1);
	stress_info("kvmi_stress: seed %llu, up to %d iterations / %d s, %s mode",
		    (unsigned long long)opt.seed, opt.iterations, opt.seconds,
		    opt.longrun ? "long" : "short");

	fd = open("/dev/kvm", O_RDWR);
	TEST_ASSERT(fd >= 0, "open(/dev/kvm): %s", strerror(errno));
	cap = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_INTROSPECTION);
	close(fd);
	/* Not a skip: the harness boots with kvm.introspection=1. */
	TEST_ASSERT(cap == KVMI_VERSION,
		    "KVM_CHECK_EXTENSION(KVM_CAP_INTROSPECTION) = %d, expected %d: KVM must be built with introspection and booted with kvm.introspection=1",
		    cap, KVMI_VERSION);

	/* Before any VM or thread exists. */
	fork_server_start();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	TEST_ASSERT(!sigaction(SIGUSR1, &sa, NULL), "sigaction");
	hard_deadline = t_start + (opt.seconds + 240) * 1000ll;
	TEST_ASSERT(!pthread_create(&wd_thread, NULL, wd_fn, NULL),
		    "pthread_create");

	rng_seed(&W.rng, opt.seed, 0);
	for (i = 0; i < NR_SCEN; i++)
		order[i] = i;
	for (i = NR_SCEN - 1; i > 0; i--) {
		int j = rnd(&W.rng, i + 1), tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}

	world_make_vm();
	end = t_start + opt.seconds * 1000ll;
	for (i = 0; i < opt.iterations && now_ms() < end; i++) {
		struct rng r;
		int sc = pick_scenario(&W.rng, order, i);

		rng_seed(&r, opt.seed, 10 + i);
		STORE(cur_iter, i + 1);
		STORE(cur_scen, sc);
		scen[sc].runs++;
		stress_info("iteration %d: %s (%.1f s)", i + 1, scen[sc].name,
			    (now_ms() - t_start) / 1000.0);
		switch (sc) {
		case SC_FUZZ:
			sc_fuzz(&r);
			break;
		case SC_BAD_REPLY:
			sc_bad_reply(&r);
			break;
		case SC_TOOL_DEATH:
			sc_tool_death(&r);
			break;
		case SC_STOP_READING:
			sc_stop_reading(&r);
			break;
		case SC_RACES:
			sc_races(&r);
			break;
		case SC_VM_DESTROY:
			sc_vm_destroy(&r);
			break;
		case SC_VMM_KILLED:
			sc_vmm_killed(&r);
			break;
		case SC_REHOOK:
			sc_rehook(&r);
			break;
		}
		if (W.vm && !W.vm->broken)
			expect_progress(W.vm, PROGRESS_MS, "end of iteration");
		if (nfails >= MAX_FAILS) {
			stress_info("stopping after %d failures", nfails);
			break;
		}
	}

	STORE(cur_scen, SC_SETUP);
	if (W.s) {
		sess_end(W.vm, W.s, END_PREUNHOOK);
		W.s = NULL;
	}
	vm_free_ctx(W.vm);
	W.vm = NULL;
	finish(false);
	ksft_finished();
}
