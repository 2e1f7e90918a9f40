using System.Diagnostics;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Probes;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// `forensics monitor -f arrow` read live by an independent Arrow reader (apache-arrow under Node) while a
/// lab with our datapath runs the star wars scenario's denylisted step: the datapath's drop reaches the
/// reader as a kdrop row (the kernel frees the packet the tc program shot) within a second.
/// </summary>
[Collection("lab")]
public class MonitorArrowTests
{
    [KernelFact]
    public void MonitorArrow_LabDropsAPacket_ReaderSeesTheKdropWithinASecond()
    {
        Assert.Null(ArrowReader.MissingReason());
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        var psi = new ProcessStartInfo("/bin/sh", ["-c", $"exec dotnet '{cli}' monitor -f arrow -t kdrop -d 90s | exec node '{ArrowReader.Script}'"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["NODE_PATH"] = ArrowReader.Modules;
        using var pipe = Process.Start(psi)!;
        try
        {
            var sw = Stopwatch.StartNew();
            while (pipe.StandardError.ReadLine() is { } l && !l.StartsWith("Listening for events", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(60))
            {
            }
            Assert.False(pipe.HasExited, "the monitor ended before it listened");
            _ = pipe.StandardError.ReadToEndAsync();
            var head = pipe.StandardOutput.ReadLineAsync();
            var name = LabFixture.UniqueName();
            var cluster = LabFixture.Load("starwars.yaml", name);
            using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
            var node = Attribution.NetnsInode($"/run/netns/{lab.State.NodeNetns}") ?? throw new InvalidOperationException("no node netns");
            var step = cluster.Lab!.Steps.Single(s => s.Name == "xwing-to-denylisted-host");

            ArrowRead? schema = null;
            int table = 0, time = 0, dst = 0, port = 0, netns = 0, reason = 0, kind = 0, failed = 0;
            var nodeText = node.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var latencies = new List<TimeSpan>();
            // up to three attempts: a machine starved of CPU for a moment (other suites on the same cores) delays
            // one reading; the stream's promise is that an event is readable within a second when the reader keeps up
            for (var attempt = 0; attempt < 3 && !latencies.Any(l => l < TimeSpan.FromSeconds(1)); attempt++)
            {
                var stepAt = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
                Assert.False(lab.RunStep(step).Delivered);
                if (schema is null)
                {
                    // the stream's schema comes with its first batch
                    Assert.True(head.Wait(TimeSpan.FromSeconds(90)), "no schema from the reader");
                    schema = ArrowReader.Parse([head.Result!]);
                    Assert.Equal("timestamp[ns,UTC]", schema.Schema[schema.Column("time")].Type);
                    Assert.Equal("uint32", schema.Schema[schema.Column("reason")].Type);
                    (table, time, dst, port) = (schema.Column("table"), schema.Column("time"), schema.Column("dst_ip"), schema.Column("dst_port"));
                    (netns, reason, kind, failed) = (schema.Column("netns_ino"), schema.Column("reason_name"), schema.Column("kind"), schema.Column("failed"));
                }
                // batches arrive as the monitor flushes them; the machine's other kdrops (every namespace's) come too
                System.Text.Json.JsonElement[]? row = null;
                ArrowBatch? found = null;
                int batches = 0;
                var lost = new List<string>();
                var deadline = Stopwatch.StartNew();
                while (found is null && deadline.Elapsed < TimeSpan.FromSeconds(90))
                {
                    var next = pipe.StandardOutput.ReadLineAsync();
                    if (!next.Wait(TimeSpan.FromSeconds(90)) || next.Result is null)
                        break;
                    var batch = ArrowReader.ParseBatch(next.Result);
                    batches++;
                    foreach (var r in batch.Rows)
                    {
                        if (ArrowRead.Text(r[table]) == "loss")
                            lost.Add($"{ArrowRead.Text(r[kind])}: {ArrowRead.Text(r[failed])} failed");
                        if (row is null && ArrowRead.Text(r[table]) == "kdrop" && ArrowRead.Text(r[dst]) == "203.0.113.66" && ArrowRead.Text(r[port]) == "443"
                            && ArrowRead.Text(r[netns]) == nodeText && long.Parse(ArrowRead.Text(r[time])!, System.Globalization.CultureInfo.InvariantCulture) >= stepAt - 1_000_000_000)
                        {
                            row = r;
                            found = batch;
                        }
                    }
                }
                Assert.True(found is not null, $"the lab's drop to darkside (203.0.113.66:443 in netns {node}) never reached the reader: {batches} batches read, loss [{string.Join(", ", lost)}]");
                Assert.StartsWith("TC_", ArrowRead.Text(row![reason]), StringComparison.Ordinal); // freed after the tc program shot it
                latencies.Add(TimeSpan.FromTicks((found!.ReceivedNs - long.Parse(ArrowRead.Text(row[time])!, System.Globalization.CultureInfo.InvariantCulture)) / 100));
            }
            Assert.True(latencies.Any(l => l < TimeSpan.FromSeconds(1)), $"the drop reached the reader {string.Join(", ", latencies.Select(l => $"{l.TotalMilliseconds:0} ms"))} after it happened");
        }
        finally
        {
            if (!pipe.HasExited)
                pipe.Kill(entireProcessTree: true);
            pipe.WaitForExit(10_000);
        }
    }
}
