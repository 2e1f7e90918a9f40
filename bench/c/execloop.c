// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process execs at a paced rate, for the soak benchmark (bench/run.sh soak): fork, execve
 * /bin/true, wait; RATE per second for SECONDS (bounded). Prints one line of key=value results.
 *
 *   execloop RATE SECONDS
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	char *const args[] = { "/bin/true", "soak", NULL };
	char *const env[] = { NULL };
	unsigned long long execs = 0, failed = 0;
	double rate, seconds, t0, t;

	if (argc < 3)
		return 2;
	rate = atof(argv[1]);
	seconds = atof(argv[2]);
	if (rate <= 0 || seconds <= 0 || seconds > 3600)
		return 2;
	t0 = now();
	while ((t = now() - t0) < seconds) {
		pid_t p;
		int status;

		if ((double)(execs + failed) >= rate * t) {
			struct timespec ts = { 0, 500000 };	/* 500 us */
			nanosleep(&ts, NULL);
			continue;
		}
		p = fork();
		if (p == 0) {
			execve(args[0], args, env);
			_exit(127);
		}
		if (p < 0 || waitpid(p, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
		else
			execs++;
	}
	printf("execs=%llu failed=%llu seconds=%.3f rate=%.1f\n", execs, failed, now() - t0, execs / (now() - t0));
	return 0;
}
