// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A churn of short TCP connections, for the soak benchmark (bench/run.sh soak):
 *
 *   churn serve IP PORT SECONDS          accept, read the request, answer 200 bytes, close (the server closes first)
 *   churn connect IP PORT RATE SECONDS   connect, send 100 bytes, read the answer, close; RATE per second (paced)
 *
 * Both bounded in time. The client prints one line of key=value results: connections made, failed, and the rate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(struct sockaddr_in *a, double seconds)
{
	char buf[512], answer[200];
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	unsigned long long served = 0;
	double t0 = now();

	memset(answer, 'a', sizeof(answer));
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)a, sizeof(*a)) < 0 || listen(l, 1024) < 0) {
		perror("bind/listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (now() - t0 < seconds) {
		struct pollfd p = { l, POLLIN, 0 };
		int c;

		if (poll(&p, 1, 200) <= 0)
			continue;
		c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		if (read(c, buf, sizeof(buf)) > 0 && write(c, answer, sizeof(answer)) > 0)
			served++;
		close(c);
	}
	printf("served=%llu\n", served);
	return 0;
}

static int connect_loop(struct sockaddr_in *a, double rate, double seconds)
{
	char req[100], buf[512];
	unsigned long long made = 0, failed = 0;
	double t0 = now(), t;

	memset(req, 'r', sizeof(req));
	while ((t = now() - t0) < seconds) {
		int s, n;

		if (rate > 0 && (double)(made + failed) >= rate * t) {
			struct timespec ts = { 0, 200000 };	/* 200 us */
			nanosleep(&ts, NULL);
			continue;
		}
		s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)a, sizeof(*a)) < 0 || write(s, req, sizeof(req)) != sizeof(req)) {
			failed++;
			if (s >= 0)
				close(s);
			continue;
		}
		while ((n = read(s, buf, sizeof(buf))) > 0)
			;
		close(s);
		if (n == 0)
			made++;
		else
			failed++;
	}
	printf("connections=%llu failed=%llu seconds=%.3f rate=%.1f\n", made, failed, now() - t0, made / (now() - t0));
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };

	if (argc < 5 || inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
		fprintf(stderr, "usage: churn serve IP PORT SECONDS | churn connect IP PORT RATE SECONDS\n");
		return 2;
	}
	a.sin_port = htons(atoi(argv[3]));
	if (!strcmp(argv[1], "serve"))
		return serve(&a, atof(argv[4]) > 3600 ? 3600 : atof(argv[4]));
	if (!strcmp(argv[1], "connect") && argc > 5)
		return connect_loop(&a, atof(argv[4]), atof(argv[5]) > 3600 ? 3600 : atof(argv[5]));
	return 2;
}
