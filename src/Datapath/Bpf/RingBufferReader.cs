using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

/// <summary>
/// Called once per ring buffer record. The span is valid only during the call:
/// copy what you keep, take no locks, log nothing.
/// </summary>
public delegate void RingRecordHandler(ReadOnlySpan<byte> record);

/// <summary>
/// Reads one or more BPF ring buffers through libbpf. The programs batch their
/// wakeups, so callers poll on a short timer (<see cref="Poll"/>) rather than wait for one.
/// </summary>
public sealed unsafe class RingBufferReader : IDisposable
{
    private readonly RingBufferHandle handle;
    private readonly RingRecordHandler handler;
    private GCHandle self;
    private Exception? callbackError;
    private long records;
    private long budget = long.MaxValue;

    public RingBufferReader(IReadOnlyList<BpfMap> maps, RingRecordHandler handler)
    {
        ArgumentNullException.ThrowIfNull(maps);
        if (maps.Count == 0)
            throw new ArgumentException("no ring buffer maps", nameof(maps));
        this.handler = handler;
        self = GCHandle.Alloc(this);
        var ctx = (void*)GCHandle.ToIntPtr(self);
        var rb = LibBpf.ring_buffer__new(maps[0].Fd, &OnSample, ctx, null);
        if (rb == 0)
        {
            self.Free();
            BpfException.Check(rb, $"ring_buffer__new({maps[0].Name})");
        }
        handle = new RingBufferHandle(rb);
        for (int i = 1; i < maps.Count; i++)
            BpfException.Check(LibBpf.ring_buffer__add(rb, maps[i].Fd, &OnSample, ctx), $"ring_buffer__add({maps[i].Name})");
    }

    public RingBufferReader(BpfMap map, RingRecordHandler handler) : this([map], handler) { }

    /// <summary>Records handed to the handler so far.</summary>
    public long Records => Interlocked.Read(ref records);

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for a wakeup, then handles every
    /// record available (the programs batch wakeups, so records may be waiting
    /// without one); returns how many. EINTR counts as 0.
    /// </summary>
    public int Poll(int timeoutMs)
    {
        // at most PollBudget records per call, so that a producer that never pauses cannot keep the caller
        // from checking whether to stop (a callback's -EINTR ends libbpf's loop, as a signal would)
        long before = Records;
        budget = PollBudget;
        try
        {
            int n = LibBpf.ring_buffer__poll(handle.DangerousGetHandle(), timeoutMs);
            Rethrow();
            if (n == -4) // EINTR: a signal or the budget, the caller decides whether to stop
                n = 0;
            BpfException.Check(n, "ring_buffer__poll");
            if (budget > 0)
                Consume();
        }
        finally
        {
            budget = long.MaxValue;
        }
        return (int)(Records - before);
    }

    /// <summary>Records one <see cref="Poll"/> handles at most.</summary>
    public const long PollBudget = 1 << 16;

    /// <summary>Handles every record available now without waiting.</summary>
    public int Consume()
    {
        int n = LibBpf.ring_buffer__consume(handle.DangerousGetHandle());
        Rethrow();
        if (n == -4)
            return 0;
        return BpfException.Check(n, "ring_buffer__consume");
    }

    /// <summary>
    /// Handles the records available now, at most about <paramref name="maxRecords"/> (a producer that never
    /// pauses would keep <see cref="Consume()"/> going); returns how many were handled.
    /// </summary>
    public long Consume(long maxRecords)
    {
        long before = Records;
        budget = Math.Max(1, maxRecords);
        try
        {
            Consume();
        }
        finally
        {
            budget = long.MaxValue;
        }
        return Records - before;
    }

    private void Rethrow()
    {
        var e = callbackError;
        if (e is not null)
        {
            callbackError = null;
            throw new InvalidOperationException("ring buffer handler failed: " + e.Message, e);
        }
    }

    [UnmanagedCallersOnly]
    private static int OnSample(void* ctx, void* data, nuint size)
    {
        var reader = (RingBufferReader)GCHandle.FromIntPtr((nint)ctx).Target!;
        try
        {
            reader.handler(new ReadOnlySpan<byte>(data, (int)size));
            reader.records++;
            // (handled, then stop: libbpf has already consumed the record a callback returns an error for)
            return --reader.budget > 0 ? 0 : -4;
        }
#pragma warning disable CA1031 // rethrown on the managed side
        catch (Exception e)
        {
            reader.callbackError = e;
            return -1; // stops this poll; Poll rethrows
        }
#pragma warning restore CA1031
    }

    public void Dispose()
    {
        handle.Dispose();
        if (self.IsAllocated)
            self.Free();
    }
}
