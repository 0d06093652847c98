// Drives Pigeon with both official JPush Node SDKs from npm, `jpush-sdk` (callbacks, over the
// `request` library) and `jpush-async` (promises, over Node's https), exactly as published.
// Run by tests/python/test_node_sdks.py with PIGEON_BASE, APP_KEY, MASTER_SECRET and RID (a
// registered android device) in the environment; prints one JSON line per SDK and exits 0 when
// every answer was as JPush's.
//
// Both SDKs hard-code JPush's hosts (api.jpush.cn, device.jpush.cn, report.jpush.cn) in
// module-level constants with no option to change them, and both end in `https.request`.
// So this script sends every https request for a *.jpush.cn host to PIGEON_BASE over plain
// http instead, keeping method, path and headers; node_modules stay as published.
'use strict'

const assert = require('assert')
const http = require('http')
const https = require('https')
const util = require('util')

const base = new URL(process.env.PIGEON_BASE)
const appKey = process.env.APP_KEY
const secret = process.env.MASTER_SECRET
const rid = process.env.RID

const seen = [] // every request path, to show which URLs the SDKs built
const httpsRequest = https.request
https.request = function (input, options, callback) {
  // https.request(options[, callback]) or (url[, options][, callback])
  let opts
  if (typeof input === 'string' || input instanceof URL) {
    const u = new URL(input)
    if (typeof options === 'function') {
      callback = options
      options = {}
    }
    opts = Object.assign({ host: u.hostname, path: u.pathname + u.search }, options)
  } else {
    opts = input
    callback = options
  }
  const host = opts.hostname || opts.host || ''
  if (!/(^|\.)jpush\.cn$/.test(host)) {
    return httpsRequest.apply(this, arguments)
  }
  seen.push(`${(opts.method || 'GET').toUpperCase()} ${opts.path}`)
  return http.request({
    host: base.hostname,
    port: base.port,
    method: opts.method,
    path: opts.path,
    headers: opts.headers,
    timeout: opts.timeout
  }, callback)
}

const TAG = 'sdk_tag_' + Date.now().toString(36)

async function withSdk (name, c) {
  // Tags and alias of the device: set, then read back.
  await c.updateDeviceTagAlias(rid, name.replace('-', '_') + '_alias', false, [TAG], [])
  const device = await c.getDeviceTagAlias(rid)
  assert.ok(device.tags.includes(TAG), JSON.stringify(device))
  assert.strictEqual(device.alias, name.replace('-', '_') + '_alias')

  // Membership of the tag (jpush-async builds /v3/tags//{tag}/registration_ids/{rid}).
  assert.deepStrictEqual(await c.isDeviceInTag(TAG, rid), { result: true })
  assert.deepStrictEqual(await c.isDeviceInTag(TAG, 'nosuchdevice0000'), { result: false })

  const tags = await c.getTagList()
  assert.ok(tags.tags.includes(TAG), JSON.stringify(tags))

  // Pushes: to everyone and to the tag.
  const toAll = await c.push().setPlatform('all').setAudience('all')
    .setNotification('hello from ' + name).send()
  assert.ok(Number(toAll.msg_id) > 0, JSON.stringify(toAll))
  const toTag = await c.push().setPlatform('android').setAudience({ tag: [TAG] })
    .setNotification('hello tag from ' + name).send()
  assert.ok(Number(toTag.msg_id) > 0, JSON.stringify(toTag))

  // A report on the push.
  const report = await c.report(String(toTag.msg_id))
  return { toAll, toTag, report, tags: device.tags }
}

async function deleteTag (c) {
  const r = await c.deleteTag(TAG, null)
  assert.ok(r === 200 || (typeof r === 'object' && !r.error), JSON.stringify(r))
  assert.deepStrictEqual(await c.isDeviceInTag(TAG, rid), { result: false })
  const tags = await c.getTagList()
  assert.ok(!tags.tags.includes(TAG), JSON.stringify(tags))
}

// jpush-sdk: callbacks; its payload builder's send(callback).
function sdkClient () {
  const JPush = require('jpush-sdk')
  const client = JPush.buildClient(appKey, secret, 1, false)
  const p = (fn) => util.promisify(fn).bind(client)
  return {
    updateDeviceTagAlias: p(client.updateDeviceTagAlias),
    getDeviceTagAlias: p(client.getDeviceTagAlias),
    isDeviceInTag: p(client.isDeviceInTag),
    getTagList: p(client.getTagList),
    deleteTag: p(client.deleteTag),
    push () {
      const payload = client.push()
      const send = util.promisify(payload.send).bind(payload)
      const chain = {
        setPlatform (v) { payload.setPlatform(v === 'all' ? JPush.ALL : v); return chain },
        setAudience (v) { payload.setAudience(v === 'all' ? JPush.ALL : JPush.tag(v.tag[0])); return chain },
        setNotification (v) { payload.setNotification(v); return chain },
        send
      }
      return chain
    },
    async report (msgId) {
      const r = await p(client.getReportReceiveds)(msgId)
      assert.ok(Array.isArray(r) && String(r[0].msg_id) === msgId, JSON.stringify(r))
      return r
    }
  }
}

// jpush-async: promises.
function asyncClient () {
  const { JPushAsync } = require('jpush-async')
  const client = JPushAsync.buildClient(appKey, secret, 1, false)
  return {
    updateDeviceTagAlias: (...a) => client.updateDeviceTagAlias(...a),
    getDeviceTagAlias: (...a) => client.getDeviceTagAlias(...a),
    isDeviceInTag: (...a) => client.isDeviceInTag(...a),
    getTagList: (...a) => client.getTagList(...a),
    deleteTag: (...a) => client.deleteTag(...a),
    push () {
      const payload = client.push()
      const chain = {
        setPlatform (v) { payload.setPlatform(v === 'all' ? JPushAsync.ALL : v); return chain },
        setAudience (v) { payload.setAudience(v === 'all' ? JPushAsync.ALL : JPushAsync.tag(v.tag[0])); return chain },
        setNotification (v) { payload.setNotification(v); return chain },
        send: () => payload.send()
      }
      return chain
    },
    async report (msgId) {
      // Its GET reports drop the query string (it requests only the URL's pathname), so the
      // report here is the POST one: delivery status of the push on the device.
      const { res, err } = await client.getReportStatusMessage(Number(msgId), [rid])
      assert.ok(!err, String(err && (err.message || JSON.stringify(err))))
      assert.ok(res[rid] && typeof res[rid].status === 'number', JSON.stringify(res))
      return res
    }
  }
}

async function main () {
  const results = {}
  for (const [name, make] of [['jpush-sdk', sdkClient], ['jpush-async', asyncClient]]) {
    const c = make()
    const from = seen.length
    try {
      results[name] = await withSdk(name, c)
      await deleteTag(c)
    } catch (e) {
      console.error(`${name} failed: ${e && e.stack ? e.stack : JSON.stringify(e)}`)
      console.error('requests: ' + JSON.stringify(seen.slice(from)))
      process.exit(1)
    }
    results[name].requests = seen.slice(from)
    console.log(JSON.stringify({ sdk: name, ...results[name] }))
  }
}

main()
