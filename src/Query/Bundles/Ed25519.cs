using System.Numerics;
using System.Security.Cryptography;

namespace Forensics.Query.Bundles;

/// <summary>
/// Ed25519 signature verification (RFC 8032, section 5.1.7), in managed code: .NET 10 has no
/// Ed25519, and verifying a bundle must work offline without external tools. Verification only:
/// signing goes through ssh-keygen, which holds the private key. Not constant-time, which
/// verification does not need (all inputs are public).
/// </summary>
internal static class Ed25519
{
    private static readonly BigInteger P = BigInteger.Pow(2, 255) - 19;
    private static readonly BigInteger L = BigInteger.Pow(2, 252) + BigInteger.Parse("27742317777372353535851937790883648493", System.Globalization.CultureInfo.InvariantCulture);
    private static readonly BigInteger D = Mod(-121665 * Inv(121666));
    private static readonly BigInteger SqrtM1 = BigInteger.ModPow(2, (P - 1) / 4, P);
    private static readonly Point G = BasePoint();

    private readonly record struct Point(BigInteger X, BigInteger Y, BigInteger Z, BigInteger T);

    public static bool Verify(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (publicKey.Length != 32 || signature.Length != 64)
        {
            return false;
        }
        var a = Decompress(publicKey);
        var r = Decompress(signature[..32]);
        if (a is null || r is null)
        {
            return false;
        }
        var s = new BigInteger(signature[32..], isUnsigned: true, isBigEndian: false);
        if (s >= L)
        {
            return false;
        }
        var buf = new byte[64 + message.Length];
        signature[..32].CopyTo(buf);
        publicKey.CopyTo(buf.AsSpan(32));
        message.CopyTo(buf.AsSpan(64));
        var h = new BigInteger(SHA512.HashData(buf), isUnsigned: true, isBigEndian: false) % L;
        var sb = Mul(s, G);
        var rha = Add(r.Value, Mul(h, a.Value));
        return Mod(sb.X * rha.Z - rha.X * sb.Z).IsZero && Mod(sb.Y * rha.Z - rha.Y * sb.Z).IsZero;
    }

    private static BigInteger Mod(BigInteger v)
    {
        var m = v % P;
        return m.Sign < 0 ? m + P : m;
    }

    private static BigInteger Inv(BigInteger v) => BigInteger.ModPow(Mod(v), P - 2, P);

    private static Point Add(Point p, Point q)
    {
        var a = Mod((p.Y - p.X) * (q.Y - q.X));
        var b = Mod((p.Y + p.X) * (q.Y + q.X));
        var c = Mod(2 * p.T * q.T * D);
        var d = Mod(2 * p.Z * q.Z);
        var e = b - a;
        var f = d - c;
        var g = d + c;
        var hh = b + a;
        return new Point(Mod(e * f), Mod(g * hh), Mod(f * g), Mod(e * hh));
    }

    private static Point Mul(BigInteger s, Point p)
    {
        var q = new Point(0, 1, 1, 0);
        while (s.Sign > 0)
        {
            if (!s.IsEven)
            {
                q = Add(q, p);
            }
            p = Add(p, p);
            s >>= 1;
        }
        return q;
    }

    private static BigInteger? RecoverX(BigInteger y, bool sign)
    {
        if (y >= P)
        {
            return null;
        }
        var x2 = Mod((y * y - 1) * Inv(D * y * y + 1));
        if (x2.IsZero)
        {
            return sign ? null : BigInteger.Zero;
        }
        var x = BigInteger.ModPow(x2, (P + 3) / 8, P);
        if (!Mod(x * x - x2).IsZero)
        {
            x = Mod(x * SqrtM1);
        }
        if (!Mod(x * x - x2).IsZero)
        {
            return null;
        }
        if (x.IsEven == sign)
        {
            x = P - x;
        }
        return x;
    }

    private static Point? Decompress(ReadOnlySpan<byte> s)
    {
        var bytes = s.ToArray();
        var sign = (bytes[31] & 0x80) != 0;
        bytes[31] &= 0x7f;
        var y = new BigInteger(bytes, isUnsigned: true, isBigEndian: false);
        var x = RecoverX(y, sign);
        return x is null ? null : new Point(x.Value, y, 1, Mod(x.Value * y));
    }

    private static Point BasePoint()
    {
        var y = Mod(4 * Inv(5));
        var x = RecoverX(y, false)!.Value;
        return new Point(x, y, 1, Mod(x * y));
    }
}
