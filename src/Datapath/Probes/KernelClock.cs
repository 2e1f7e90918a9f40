using System.Runtime.InteropServices;

namespace Forensics.Datapath.Probes;

/// <summary>
/// The kernel clocks the probes stamp with: CLOCK_MONOTONIC (every event's
/// header, bpf_ktime_get_ns) and CLOCK_BOOTTIME (exec ids and process start
/// times, bpf_ktime_get_boot_ns; /proc start times). They differ by the time
/// the machine spent suspended.
/// </summary>
public static unsafe partial class KernelClock
{
    private const int CLOCK_MONOTONIC = 1;
    private const int CLOCK_BOOTTIME = 7;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Sec;
        public long Nsec;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime", SetLastError = true)]
    private static partial int ClockGettime(int clock, Timespec* ts);

    private static ulong Now(int clock)
    {
        Timespec ts;
        if (ClockGettime(clock, &ts) != 0)
            throw new InvalidOperationException($"clock_gettime({clock}) failed: errno {Marshal.GetLastPInvokeError()}");
        return (ulong)ts.Sec * 1_000_000_000UL + (ulong)ts.Nsec;
    }

    /// <summary>CLOCK_MONOTONIC now, in ns: the clock of event headers (ktime).</summary>
    public static ulong MonotonicNs() => Now(CLOCK_MONOTONIC);

    /// <summary>CLOCK_BOOTTIME now, in ns: the clock of exec ids and process start times.</summary>
    public static ulong BoottimeNs() => Now(CLOCK_BOOTTIME);
}
