using System.Diagnostics;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Probes;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// `forensics monitor -o arrow` read live by an independent Arrow reader (apache-arrow under Node) while a
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
        var psi = new ProcessStartInfo("/bin/sh", ["-c", $"exec dotnet '{cli}' monitor -o arrow -t kdrop -d 90s | exec node '{ArrowReader.Script}'"])
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
            using var lab = Lab.Up(cluster, LabFixture.WithDatapath());
            var node = Attribution.NetnsInode($"/run/netns/{lab.State.NodeNetns}") ?? throw new InvalidOperationException("no node netns");
            var step = cluster.Lab!.Steps.Single(s => s.Name == "xwing-to-denylisted-host");
            var result = lab.RunStep(step);
            Assert.False(result.Delivered);

            Assert.True(head.Wait(TimeSpan.FromSeconds(30)), "no schema from the reader");
            var schema = ArrowReader.Parse([head.Result!]);
            Assert.Equal("timestamp[ns,UTC]", schema.Schema[schema.Column("time")].Type);
            Assert.Equal("uint32", schema.Schema[schema.Column("reason")].Type);
            int table = schema.Column("table"), time = schema.Column("time"), dst = schema.Column("dst_ip"), port = schema.Column("dst_port"),
                netns = schema.Column("netns_ino"), reason = schema.Column("reason_name");
            // batches arrive as the monitor flushes them; the drop is among the first after the step
            ArrowBatch? found = null;
            System.Text.Json.JsonElement[]? row = null;
            var deadline = Stopwatch.StartNew();
            while (found is null && deadline.Elapsed < TimeSpan.FromSeconds(30))
            {
                var next = pipe.StandardOutput.ReadLineAsync();
                if (!next.Wait(TimeSpan.FromSeconds(30)) || next.Result is null)
                    break;
                var batch = ArrowReader.ParseBatch(next.Result);
                row = batch.Rows.FirstOrDefault(r => ArrowRead.Text(r[table]) == "kdrop" && ArrowRead.Text(r[dst]) == "203.0.113.66"
                    && ArrowRead.Text(r[port]) == "443" && ArrowRead.Text(r[netns]) == node.ToString(System.Globalization.CultureInfo.InvariantCulture));
                if (row is not null)
                    found = batch;
            }
            Assert.True(found is not null, "the lab's drop to darkside (203.0.113.66:443) never reached the reader");
            Assert.StartsWith("TC_", ArrowRead.Text(row![reason]), StringComparison.Ordinal); // freed after the tc program shot it
            var latency = TimeSpan.FromTicks((found!.ReceivedNs - long.Parse(ArrowRead.Text(row[time])!, System.Globalization.CultureInfo.InvariantCulture)) / 100);
            Assert.True(latency < TimeSpan.FromSeconds(1), $"the drop reached the reader {latency.TotalMilliseconds:0} ms after it happened");
        }
        finally
        {
            if (!pipe.HasExited)
                pipe.Kill(entireProcessTree: true);
            pipe.WaitForExit(10_000);
        }
    }
}
