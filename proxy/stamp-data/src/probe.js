(()=>{"use strict";
// ticket-stamp's probe: what this page actually ran, measured in the browser.
// It reads the data block the proxy put before it. A ticket's JavaScript
// body ends with a marker that calls __ticketStampRan once it has run to its
// end (from a worker, over a BroadcastChannel); SystemJS modules are followed
// through SystemJS's own onload hook; other files (CSS, JSON) count once
// loaded. Resource Timing shows production's files that loaded where the
// ticket has one. It catches errors, shows the badge, and reports once (no
// cookies, no query strings, no personal data).
// (The browser's own fetch, taken before the app's code runs: an app's
// wrapper, an auth interceptor that throws without its token, must not
// silence the report a rollout is judged by.)
const d=document,W=window,F=W.fetch,el=d.getElementById("ticket-stamp-data");
if(!el||W.__ticketStamp)return;
let D;try{D=JSON.parse(el.textContent)}catch(_){return}
const S=W.__ticketStamp={data:D,ran:new Set,worker:new Set,worklet:new Set,loaded:new Set,prod:new Map,linked:new Map,errors:[],count:0,failed:0,settled:!1};
// Files of the same bytes share a hash (two empty stylesheets): the
// ticket's copy of one loading does not vouch for the other, so for them
// what loaded is told apart by path.
const mods=D.modules||[],byHash=new Map,byProd=new Map,dup=new Set,tpath=new Set;
for(const m of mods){m.js=/\.(m|c)?jsx?$/i.test(m.p);if(byHash.has(m.h))dup.add(m.h);byHash.set(m.h,m);try{byProd.set(new URL(m.p,location.href).href,m)}catch(_){}}
// A hashed file's other versions: the same folder and name around a hash
// of the same length, both hashes maybe a bundler's (a digit, a letter, no
// run of five lower-case letters; or no digit, three capitals, no run of
// four), one with a digit: `icon-ArrowDown.js` is no version of
// `icon-ArrowLeft.js`. Looser than the proxy's pairing (it serves the
// ticket's build only when both hashes have a digit): one production's
// build that ran is named, never one the proxy answered with the ticket's.
const gen=h=>/^[\w-]+$/.test(h)&&/\d/.test(h)&&/[A-Za-z]/.test(h)&&!/[a-z]{5}/.test(h),
 nod=h=>/^[\w-]+$/.test(h)&&!/\d/.test(h)&&(h.match(/[A-Z]/g)||[]).length>=3&&!/[a-z]{4}/.test(h),
 pair=(a,b)=>a.length===b.length&&a!==b&&(gen(a)||nod(a))&&(gen(b)||nod(b))&&(gen(a)||gen(b));
const sibs=mods.filter(m=>Array.isArray(m.q)&&m.q.length===3),sib=p=>sibs.find(({p:t,q:[a,n,z]})=>p.length===a.length+n+z.length&&p.startsWith(a)&&p.endsWith(z)&&pair(t.slice(a.length,a.length+n),p.slice(a.length,a.length+n)));
// Production's copy of a file loaded, then the ticket's ran: outside a
// secure context that copy may have been the ticket's answer at
// production's URL (no Server-Timing to tell), so it is forgotten. In one,
// it was production's, and it stays named: both may have run (an inline
// script's import() of production's URL beside the map's entry).
const ran=(h,worker)=>{if(!byHash.has(h)||S.ran.has(h)&&!worker)return;S.ran.add(h);if(worker)S.worker.add(h);if(!W.isSecureContext)S.prod.delete(h);changed=!0;later()};
W.__ticketStampRan=h=>ran(h,!1);
const cut=(s,n)=>String(s==null?"":s).slice(0,n||200);
const pathOf=u=>{try{const x=new URL(u,location.href);return x.origin===location.origin?x.pathname:x.origin+x.pathname}catch(_){return""}};
// What a <link> loaded (a preload, a module preload, a stylesheet) is
// used only where an element of the page uses that very URL: a script, or
// a stylesheet. A preload by itself runs and applies nothing; a script
// that uses a preloaded response makes no entry of its own.
const href=u=>{try{return new URL(u,location.href).href.split("#")[0]}catch(_){return""}};
const isCss=p=>/\.css$/i.test(p);
// (The page's, and those of the frames whose loads it reads as its own.)
const framesRead=[];
const uses=(u,js)=>{const a=href(u);if(!a)return!1;for(const w of [W,...framesRead]){let doc;try{if(w!==W&&w.__ticketStamp)continue;doc=w.document}catch(_){continue}if(!doc)continue;
 for(const e of js?doc.scripts:doc.querySelectorAll("link[href]")){const v=js?e.src:e.href;if(!v||!js&&!/(^|\s)stylesheet(\s|$)/i.test(e.rel||""))continue;if(href(v)===a)return!0}}return!1};
// The ticket's files a link loaded, until an element is seen using them.
const settle=()=>{for(const[k,u]of S.linked){const m=byHash.get(k);if(!uses(u,m.js))continue;S.linked.delete(k);if(m.js)S.loaded.add(k);else ran(k,!1)}};
let changed=!0;
// `since`: a timeline whose script entries with a 4xx status are failed
// loads of this page, from that time on (not what the response's `Link`
// header or early hints preloaded before the probe ran, nor what a worker
// says it loaded).
const see=(e,since)=>{let u;try{u=new URL(e.name)}catch(_){return}
 if(since!=null&&e.initiatorType==="script"&&e.responseStatus>=400&&e.startTime>=since){if(since===T0)importFails.push(e.startTime);failedLoad(e.name)}
 const ok=!e.responseStatus||(e.responseStatus>=200&&e.responseStatus<400);
 const ts=u.searchParams.get("__ts"),h=ts&&ts.split("?")[0];
 const st=(e.serverTiming||[]).find(t=>t.name==="ticket-stamp");
 const sh=st&&st.description;
 const k=h&&byHash.has(h)?h:sh&&byHash.has(sh)?sh:null;
 // JavaScript says itself when it ran (its marker); anything else ran once loaded.
 if(k){if(ok){const f=byHash.get(k);if(dup.has(k)){const p=pathOf(e.name);tpath.add(p);S.prod.delete(p)}if(e.initiatorType==="link"&&(f.js||isCss(f.p)))S.linked.set(k,e.name);else if(f.js)S.loaded.add(k);else ran(k,!1)}changed=!0;return}
 // Production's copy of one of the ticket's files, fetched (es-module-shims
 // fetches the modules it runs; an app reads its JSON or wasm) or loaded:
 // production's ran instead. The proxy answers a ticket page's fetch of a
 // ticket file with the ticket's, so this is a cache's or another origin's.
 // (Outside a secure context Resource Timing carries no Server-Timing, so
 // the ticket's answer at that URL looks like production's: a fetched file
 // is not judged there.)
 const m=byProd.get(u.origin+u.pathname),t=e.initiatorType;
 // Production's build of one of the ticket's hashed files, under another
 // hash (an island's import() of the URL its HTML names, a copy the
 // browser kept): it ran where the ticket has its own version. On the
 // page's origin, or on the other origin the ticket's file was uploaded
 // for (a CDN's build, which never passes the proxy).
 // (Outside a secure context the ticket's answer at a path of the page's
 // origin carries no Server-Timing to tell it: not judged.)
 const own=u.origin===location.origin,at=own?u.pathname:u.origin+u.pathname;
 if(!m&&!prodPage&&ok&&(W.isSecureContext||!own)&&!/^(beacon|navigation)$/.test(t)){const s=sib(at);
  if(s&&(s.js||!/^(fetch|xmlhttprequest)$/.test(t))){setProd("~"+at,{p:at,h:s.h,js:s.js,t,u:e.name});return}}
 if(!m||/^(beacon|navigation)$/.test(t)||/^(fetch|xmlhttprequest)$/.test(t)&&!m.js&&!W.isSecureContext)return;
 const d=dup.has(m.h);if(ok&&(W.isSecureContext||!(S.ran.has(m.h)&&(!d||tpath.has(m.p))))){setProd(d?m.p:m.h,{p:m.p,h:m.h,js:m.js,t,u:e.name})}};
// A production file seen loading by a script (it ran) stays so when a
// link (a prefetch, a preload) loads it again.
const setProd=(k,m)=>{const o=S.prod.get(k);if(o&&o.t!=="link")m.t=o.t;S.prod.set(k,m);changed=!0};
// SystemJS runs a System.register module after it loads: its onload hook
// says when each one ran, or failed. Its minimal build (s.js) never calls
// that hook, so the module's execute function says it too, wrapped as the
// module registers (its own script is document.currentScript then).
// (Only an object of SystemJS's shape is touched.)
// (SystemJS passes a module its import() and import.meta only when its
// declare function takes two arguments: the wrapper takes as many.)
const hookSystem=()=>{try{const Sys=W.System;if(!Sys||Sys.__ticketStamp)return;
 const p=Object.getPrototypeOf(Sys);if(!p||typeof p.import!=="function"||typeof p.register!=="function")return;Sys.__ticketStamp=1;
 const o=p.onload,rg=p.register,hashOf=u=>{try{const h=new URL(u).searchParams.get("__ts");const k=h&&h.split("?")[0];return k&&byHash.has(k)?k:null}catch(_){return null}};
 p.onload=function(e,id){try{const k=hashOf(id);if(k){if(e){S.loaded.add(k);if(first(e))err("error",e&&e.message||e,id,0,e&&e.stack)}else ran(k,!1)}}catch(_){}return o&&o.apply(this,arguments)};
 p.register=function(...a){try{const s=d.currentScript,k=s&&s.src&&hashOf(s.src),i=typeof a[0]==="string"?2:1,dec=a[i];
  if(k&&typeof dec==="function"){const w=function(...x){const r=dec.apply(this,x);try{const ex=r&&r.execute;
   if(typeof ex==="function")r.execute=function(){const v=ex.apply(this,arguments);if(v&&typeof v.then==="function")v.then(()=>ran(k,!1),()=>{});else ran(k,!1);return v};else if(r)ran(k,!1)}catch(_){}return r};
   Object.defineProperty(w,"length",{value:dec.length});a[i]=w}}catch(_){}return rg.apply(this,a)}}catch(_){}};
const T0=performance.now(),importFails=[];let PO=null;
try{PO=new PerformanceObserver(l=>{hookSystem();for(const e of l.getEntries())see(e,T0);later()});PO.observe({type:"resource",buffered:!0})}catch(_){}
// A frame of this origin with no probe of its own (an <iframe srcdoc>, an
// about:blank frame the page writes into) has no map, and what it loads
// never reaches this page's timeline: it is read here, as this page's, so
// production's code it runs is said. A frame that came through the proxy
// has its own probe and badge, and says what it ran there: a frame read
// while it was still blank is no longer read once its own probe runs
// (Chromium keeps the blank document's window, and its timeline, for the
// page of this origin that replaces it).
const framed=new WeakSet,watchFrame=f=>{try{const w=f.contentWindow;if(!w||w.__ticketStamp)return;const p=w.performance;if(!p||framed.has(p))return;framed.add(p);framesRead.push(w);
 const o=new w.PerformanceObserver(l=>{let own=!0;try{own=w.performance===p&&!!w.__ticketStamp}catch(_){}if(own){o.disconnect();const i=framesRead.indexOf(w);if(i>=0)framesRead.splice(i,1);return}for(const e of l.getEntries())see(e,0);later()});o.observe({type:"resource",buffered:!0})}catch(_){}},
 frames=n=>{if(n.nodeType!==1)return;for(const f of n.localName==="iframe"?[n]:n.getElementsByTagName("iframe")){watchFrame(f);if(!f.__ticketStampFrame){f.__ticketStampFrame=1;f.addEventListener("load",()=>watchFrame(f))}}};
// A shared worker outlives the page that started it and serves every page
// that asks for it by the same URL and name: one started on production would
// serve this page production's code, and this page's would go on serving
// production after the visitor left. The ticket's pages get instances of
// their own: their name carries the variant.
// (A production page sampled during a rollout only measures: it changes nothing.)
const prodPage=D.view==="prod";
// The worker scripts this page started (without their fragment): what a
// worker says it ran on the origin's channel counts only if it is one of them.
const started=new Set(),bare=u=>String(u).split("#")[0],noteWorker=u=>{try{started.add(bare(new URL(String(u),d.baseURI).href))}catch(_){}};
// A worker whose script fails to load (a 404, a module worker's syntax
// error or missing import, a type the browser refuses) is told only by a
// plain `error` event on its Worker object, which never reaches the
// window as what a worker throws does: a failed load of this page (a
// ticket that breaks the app's worker breaks the app, on a ticket page's
// badge and in a rollout's judgement alike).
const watchWorker=(w,u)=>{try{w.addEventListener("error",e=>{if(e.message)return;const src=(()=>{try{return bare(new URL(String(u),d.baseURI).href)}catch(_){return""}})();
 S.failed++;err("load","failed to load worker "+pathOf(src),src,0,"")})}catch(_){}return w};
try{const SW=W.SharedWorker;if(SW)W.SharedWorker=new Proxy(SW,{construct(t,a,n){noteWorker(a[0]);if(prodPage)return watchWorker(Reflect.construct(t,a,n),a[0]);const o=typeof a[1]==="string"?{name:a[1]}:Object.assign({},a[1]);
 o.name=(o.name||"")+"#ticket-stamp-"+String(D.variant).slice(0,16);return watchWorker(Reflect.construct(t,[a[0],o],n),a[0])}})}catch(_){}
// Turbo and htmx show a page in this document, which keeps its modules: a
// page they fetch says which ticket, view and set of modules this document
// runs, so that a page of other modules (another ticket's, production's
// once the ticket was left in another tab or its cookie went stale, the
// ticket's after an upload) loads as a page instead. (Only to this origin:
// another would have to allow the header.)
if(!prodPage){const me=()=>String(D.ticket)+" "+String(D.view)+" "+String(D.variant),H="X-Ticket-Stamp-Document",
 own=u=>{try{return new URL(String(u),location.href).origin===location.origin}catch(_){return!1}};
 d.addEventListener("turbo:before-fetch-request",e=>{const x=e.detail||{},o=x.fetchOptions;if(!o||!own(x.url))return;const h=o.headers;
  if(h&&typeof h.set==="function")h.set(H,me());else o.headers=Object.assign({},h,{[H]:me()})},!0);
 d.addEventListener("htmx:configRequest",e=>{const x=e.detail||{};if(x.headers&&own(x.path))x.headers[H]=me()},!0)}
// Maps the page adds at runtime never pass the proxy. As one is inserted
// (with its JSON already in it, the way apps and loaders add them), its
// entries that name a module of the ticket get the ticket's URL, scopes
// that cover a CDN module cover its mirror path too, and an external map
// goes through the proxy's merge as the page's own do. Only insertions into
// the document are read: subtrees built detached are read when attached.
const abs=u=>{try{return new URL(u,location.href).href}catch(_){return""}};
const AT=new Map(Object.entries(D.at||{}).map(([l,u])=>[abs(l),abs(u)])),BARE=D.bare||{};
const mirror=h=>{const u=new URL(h);return location.origin+"/__stamp/o/"+u.protocol.slice(0,-1)+"/"+u.host+u.pathname};
const fixMap=(m,base)=>{if(!m||typeof m!=="object")return m;
 // A prefix entry ("lib/": "/lib/") gets a key of its own for each of the
 // ticket's modules under it: the longer key wins in every loader.
 const one=o=>{if(!o||typeof o!=="object")return;const add={};for(const k of Object.keys(o)){const v=o[k];if(typeof v!=="string")continue;
  if(Object.prototype.hasOwnProperty.call(BARE,k)){o[k]=abs(BARE[k]);continue}
  let h;try{h=new URL(v,base).href}catch(_){continue}const t=AT.get(h)||(h.includes("?")?AT.get(h.split(/[?#]/)[0]):void 0);if(t){o[k]=t;continue}
  if(k.endsWith("/")&&h.endsWith("/"))for(const[l,u]of AT)if(l.length>h.length&&l.startsWith(h)){const nk=k+l.slice(h.length);if(!(nk in o))add[nk]=u}}
  Object.assign(o,add)};
 one(m.imports);const sc=m.scopes;
 if(sc&&typeof sc==="object")for(const k of Object.keys(sc)){one(sc[k]);let h;try{h=new URL(k,base)}catch(_){continue}
  if(h.origin!==location.origin&&/^https?:$/.test(h.protocol)&&[...AT.keys()].some(l=>l.startsWith(h.href))){const mk=mirror(h.href);if(!(mk in sc))sc[mk]=sc[k]}}
 return m};
// A native map the page adds may be its first (an app that fetches its
// map and writes it in has no module element in its HTML, so no map of
// the proxy's): it gets the keys the proxy writes into a page's first map.
// Each of the ticket's files by its production URL, and for a file on a
// CDN its ticket URL, its mirror path and the CDN's root, so that what a
// ticket file on a CDN imports by a relative URL is production's very
// instance. The browser keeps the first of two entries for one key: a
// page that has the proxy's map loses nothing.
const firstKeys=m=>{if(!m||typeof m!=="object")return m;if(!m.imports||typeof m.imports!=="object")m.imports={};const o=m.imports,put=(k,v)=>{if(!(k in o))o[k]=v};
 for(const[l,u]of AT){put(l,u);let x;try{x=new URL(l)}catch(_){continue}if(x.origin!==location.origin&&/^https?:$/.test(x.protocol)){put(u,u);put(mirror(l),u);put(mirror(x.origin+"/"),x.origin+"/")}}
 return m};
const MT=/^\s*(importmap|importmap-shim|systemjs-importmap|injector-importmap)\s*$/i,EXT=/^\s*(importmap-shim|systemjs-importmap|injector-importmap)\s*$/i;
const fixScript=s=>{if(s.__ticketStamp||!MT.test(s.getAttribute("type")||""))return;s.__ticketStamp=1;const src=s.getAttribute("src");
 if(src!=null){if(!EXT.test(s.getAttribute("type")))return;let u;try{u=new URL(src,d.baseURI)}catch(_){return}
  if(u.origin===location.origin&&u.pathname==="/__stamp/map")return;
  const q=new URLSearchParams({v:D.variant,src:u.origin===location.origin?u.pathname+u.search:u.href});
  if(/shim/i.test(s.getAttribute("type")))q.set("urls","absolute");const i=s.getAttribute("integrity");if(i){q.set("integrity",i);s.removeAttribute("integrity")}
  s.setAttribute("src",location.origin+"/__stamp/map?"+q);return}
 try{const m=fixMap(JSON.parse(s.textContent),d.baseURI);s.textContent=JSON.stringify(/^\s*importmap\s*$/i.test(s.getAttribute("type"))?firstKeys(m):m)}catch(_){}};
// A script or preload the app inserts by URL (a loader's appendChild, Vite's
// modulepreload helper) is pointed at the ticket's URL, as the proxy points
// the page's own: a module inserted by URL and imported through the map is
// then one instance, the ticket's. A query (a cache-busting ?v=7) does
// not change which file a URL names, as for the page's own.
// A preload of anything else (a font, an image) is left alone: its user
// asks for the production path, which the proxy answers with the ticket's.
const LR=/^\s*(modulepreload|preload|stylesheet)\s*$/i,LA=/^\s*(script|style)\s*$/i;
const fixSrc=e=>{if(e.__ticketStampSrc)return;const r=e.localName==="link"&&e.getAttribute("rel")||"";
 const a=e.localName==="script"?"src":LR.test(r)&&(!/^\s*preload\s*$/i.test(r)||LA.test(e.getAttribute("as")||""))?"href":null;
 const v=a&&e.getAttribute(a);if(v==null)return;const x=abs(v),u=AT.get(x.split(/[?#]/)[0]);if(!u||u===x)return;e.setAttribute(a,u);e.removeAttribute("integrity");e.__ticketStampSrc=1};
const fix=e=>{if(e.localName==="script")fixScript(e);fixSrc(e)};
const scan=n=>{if(!n||typeof n!=="object")return;if(n.nodeType===1&&(n.localName==="script"||n.localName==="link"))fix(n);else if((n.nodeType===1||n.nodeType===11)&&n.querySelectorAll)n.querySelectorAll("script,link[href]").forEach(fix)};
if(AT.size&&!prodPage){const wrap=(P,names,first)=>names.forEach(k=>{const f=P[k];if(typeof f!=="function")return;
  P[k]=function(...a){try{if(this.isConnected||this===d)(first?a.slice(0,1):a).forEach(scan)}catch(_){}return f.apply(this,a)}});
 // The second argument of these is a node already in the page: only the first is new.
 wrap(Node.prototype,["appendChild","insertBefore","replaceChild"],!0);wrap(Element.prototype,["append","prepend","before","after","replaceWith","insertAdjacentElement"]);wrap(Document.prototype,["append","prepend"])}
// Worklets (audio, paint) have no import map either, and no way to tell the
// page what they ran: the proxy answers their imports with the ticket's
// files, and the badge says which worklets it cannot see into.
try{const WP=W.Worklet&&W.Worklet.prototype,am=WP&&WP.addModule;if(typeof am==="function")WP.addModule=function(u,...r){S.worklet.add(pathOf(u));changed=!0;later();return am.call(this,u,...r)}}catch(_){}
// A worker says what it ran over a BroadcastChannel, which every tab of the
// origin hears. A worker this page starts gets the page's own mark as its
// URL's fragment and reports on this page's channel, so another tab's
// workers are never counted here. Left unmarked: a URL with a fragment of
// the app's own (the worker may read it), one a Trusted Types default
// policy checks, a production page sampled in a rollout (it changes
// nothing). Those, shared workers and workers a worker starts report on the
// origin's channel with their URL, and count only if this page started
// that script.
const PAGE=(()=>{try{return [...crypto.getRandomValues(new Uint8Array(8))].map(b=>b.toString(16).padStart(2,"0")).join("")}catch(_){return String(Math.random()).slice(2,18).replace(/\D/g,"0")}})();
try{const Wk=W.Worker;if(Wk)W.Worker=new Proxy(Wk,{construct(t,a,n){noteWorker(a[0]);
 try{const u=(typeof a[0]==="string"||a[0] instanceof URL)&&new URL(a[0],d.baseURI);
  if(u&&!prodPage&&!u.hash&&!(W.trustedTypes&&W.trustedTypes.defaultPolicy)&&(/^https?:$/.test(u.protocol)&&u.origin===location.origin)){u.hash="ticket-stamp="+PAGE;a=[u.href,...[...a].slice(1)]}}catch(_){}
 return watchWorker(Reflect.construct(t,a,n),a[0])}})}catch(_){}
// What a worker loaded itself (its importScripts, import(), fetch: in its
// own Resource Timing, not the page's) comes the same way, from the
// reporter the proxy puts after a worker's script on a ticket, and is read
// as the page's own: production's copy of a ticket's file a worker loaded
// is named.
const heard=own=>e=>{const m=e.data||{};if(!own&&!started.has(bare(m.from)))return;if(typeof m.ran==="string")ran(m.ran,!0);
 if(Array.isArray(m.res)){for(const x of m.res.slice(0,500))if(x&&typeof x.name==="string")see({name:x.name,initiatorType:String(x.initiatorType||""),responseStatus:+x.responseStatus||0,serverTiming:typeof x.ts==="string"&&x.ts?[{name:"ticket-stamp",description:x.ts}]:[]});later()}};
try{new BroadcastChannel("ticket-stamp").onmessage=heard(!1)}catch(_){}
if(!prodPage)try{new BroadcastChannel("ticket-stamp:"+PAGE).onmessage=heard(!0)}catch(_){}
const err=(kind,msg,src,line,stack)=>{S.count++;changed=!0;
 if(S.errors.length<5)S.errors.push({kind,message:cut(msg),source:cut(pathOf(src||"")),line:+line||0,stack:cut(String(stack||"").split("\n").find(l=>/\bat\b|@/.test(l))||"").trim()});later()};
// Frameworks catch what a component throws and only log it (Vue's and
// Angular's error handlers, a React error boundary): an Error given to
// console.error is an error the page met too. Each Error counts once, by
// whichever way it came first (React logs an uncaught one, then throws it).
const metErr=new WeakSet,first=x=>{if(!x||typeof x!=="object")return!0;if(metErr.has(x))return!1;metErr.add(x);return!0};
// A script that failed to load: an element's (its `error` event), or a
// module a module imports (only its timeline entry says so: the import
// that fails is often caught, by an app that shows a fallback or
// reloads). Each URL once, whichever way it came first.
const failedUrls=new Set,failedLoad=u=>{const k=bare(u);if(failedUrls.has(k))return;failedUrls.add(k);S.failed++;err("load","failed to load "+pathOf(u),u,0,"")};
W.addEventListener("error",e=>{const t=e.target;
 const src=t&&t!==W&&(t.src||t.href),url=src&&(typeof src==="string"?src:src.baseVal);if(url){
  // A module script whose own file came fails for a module of its graph,
  // which the timeline names: that one is the failed load, not the root.
  const own=t.localName==="script"&&String(t.type).trim().toLowerCase()==="module"&&performance.getEntriesByName(url).find(x=>x.initiatorType==="script");
  if(own&&own.responseStatus>=200&&own.responseStatus<400){setTimeout(()=>{try{if(PO)for(const x of PO.takeRecords())see(x,T0)}catch(_){}if(!importFails.some(s=>s>=own.startTime))failedLoad(url);later()},0);return}
  failedLoad(url);return}
 if(first(e.error))err("error",e.message,e.filename,e.lineno,e.error&&e.error.stack)},!0);
W.addEventListener("unhandledrejection",e=>{const r=e.reason;if(first(r))err("rejection",r&&r.message||r,"",0,r&&r.stack)});
// (Not an AbortError, a request the app cancelled, nor an Error of a
// browser extension's code: noise that says nothing of the page.)
try{const C=W.console,ce=C&&C.error;if(typeof ce==="function")C.error=function(...a){try{const x=a.find(v=>v instanceof Error);
 if(x&&x.name!=="AbortError"&&!/\b(chrome|moz|safari-web)-extension:/.test(String(x.stack))&&first(x))err("console",x.message,"",0,x.stack)}catch(_){}return ce.apply(this,a)}}catch(_){}
d.addEventListener("securitypolicyviolation",e=>err("csp",e.violatedDirective+" blocked "+pathOf(e.blockedURI),e.sourceFile,e.lineNumber,""));
// The badge: outside <body>, so body swaps (Turbo, htmx, client routers) and
// unclosed elements leave it alone; styled through the CSSOM, which a page's
// style-src does not govern.
// Production's files that loaded: those where the ticket's own copy of
// the same file did not run (production's ran instead), and those where it
// ran too (production's also loaded). Twins (one hash) are told by path.
// Production's script or stylesheet a link loaded and no element of the
// page uses ran nothing: not named, whether the ticket's copy ran or not.
const prodSplit=()=>{settle();const i=[],a=[];for(const m of S.prod.values()){if(m.t==="link"&&(m.js||isCss(m.p))&&!uses(m.u,m.js))continue;const mine=S.ran.has(m.h)&&(!dup.has(m.h)||tpath.has(m.p));(mine?a:i).push(m)}return[i,a]};
let host=null,box=null;
const css=":host{all:initial;position:fixed;right:12px;bottom:12px;z-index:2147483647}aside{display:flex;gap:.6em;align-items:center;flex-wrap:wrap;max-width:min(90vw,46em);font:13px/1.3 system-ui,sans-serif;color:#fff;background:#5b2a86;border-radius:14px;padding:6px 12px;box-shadow:0 2px 8px rgba(0,0,0,.3)}strong{font-weight:700}a,button{color:#fff;text-decoration:underline;background:none;border:0;font:inherit;cursor:pointer;padding:0}aside.warn{background:#9a3412}aside.idle{background:#374151}";
let O={};const outcome=()=>{const o=d.getElementById("ticket-stamp-outcome");try{O=o?JSON.parse(o.textContent):{}}catch(_){O={}}};
const badge=()=>{if(!D.badge)return;outcome();
 if(!host){host=d.createElement("ticket-stamp-badge");const r=host.attachShadow({mode:"open"});
  try{const s=new CSSStyleSheet;s.replaceSync(css);r.adoptedStyleSheets=[s]}catch(_){}
  box=d.createElement("aside");box.setAttribute("role","status");r.append(box)}
 if(host.parentNode!==d.documentElement)d.documentElement.append(host);
 const[prod,also]=prodSplit(),did=[...S.ran];
 // Loaded but never ran (its imports failed to resolve, it threw): said once the page settled.
 // (While a worklet runs, a module that loaded and said nothing may be one
 // it ran: not judged.)
 const not=S.settled&&!S.worklet.size?[...S.loaded].filter(h=>!S.ran.has(h)).map(h=>byHash.get(h)):[];
 const seen=did.length+prod.length+not.length;
 let text,cls="";
 if(prod.length||also.length||not.length){cls="warn";text=`${did.length} of ${seen} ran`+(prod.length?`: production's ${prod.map(m=>m.p).join(", ")} ran instead`:"")+(also.length?`; production's ${also.map(m=>m.p).join(", ")} also loaded`:"")+(not.length?`; ${not.map(m=>m.p).join(", ")} loaded but did not run`:"")}
 else if(seen){text=`${did.length} of ${seen} ${seen===1?"module":"modules"} ran`+(S.worker.size?` (${S.worker.size} in a worker)`:"")}
 else if(S.worklet.size&&!O.nothing){cls="warn";text=`none of its ${mods.length} ${mods.length===1?"module":"modules"} seen running`}
 else{cls="idle";text=O.nothing?`nothing applied: ${O.nothing}`:`none of its ${mods.length} ${mods.length===1?"module":"modules"} used on this page`}
 if(S.worklet.size)text+=`; not seen: what worklet ${[...S.worklet].join(", ")} ran (worklets cannot report)`;
 // A module uploaded on this origin that production loads from another: why it did not apply, and what to set.
 const away=Object.entries(O.elsewhere||{}).filter(([p])=>!mods.some(m=>m.p===p&&S.ran.has(m.h)));
 if(away.length){cls="warn";text+="; "+away.map(([p,u])=>{const o=new URL(u).origin;return `${p} did not apply: production loads ${u}; upload it with url_path at ${o} (with ${o} in the proxy's asset_origins)`}).join("; ")}
 if(S.count){cls="warn";text+=` \u00b7 ${S.count} ${S.count===1?"error":"errors"}`}
 S.text=text;
 box.className=cls;box.setAttribute("aria-label",`ticket-stamp: viewing ${D.ticket} (${D.view})`);
 box.replaceChildren();const t=(tag,s)=>{const e=d.createElement(tag);e.textContent=s;box.append(e);return e};
 t("strong",D.ticket);t("span",`${D.view} view \u00b7 ${D.stage}`);t("span",text).className="what";
 const a=t("a","Ticket");a.href=location.origin+"/__stamp/#/tickets/"+encodeURIComponent(D.ticket);const b=t("button","Exit to production");b.className="exit";b.onclick=leave};
const leave=()=>{const u=new URL(location.href);u.searchParams.delete("dev");u.searchParams.delete("qa");u.searchParams.delete("st");
 // A POST reaches the proxy whatever service worker the app has: no route
 // of a service worker answers it from a cache.
 // The app's own service worker, set aside while on the ticket, is asked
 // back at once (the browser's own update check may come much later).
 const sw=navigator.serviceWorker;
 F.call(W,location.origin+"/__stamp/leave",{method:"POST",credentials:"include",cache:"no-store"}).catch(()=>0)
  .then(()=>sw&&sw.getRegistration().then(r=>r&&r.update()).catch(()=>0))
  .then(()=>location.replace(u.href))};
S.leave=leave;
let timer=0;const later=()=>{if(!timer)timer=setTimeout(()=>{timer=0;if(changed){changed=!1;badge()}},50)};
const start=()=>{hookSystem();badge();new MutationObserver(()=>{if(host&&host.parentNode!==d.documentElement)badge()}).observe(d.documentElement,{childList:!0});
 frames(d.documentElement);new MutationObserver(rs=>{for(const r of rs)r.addedNodes.forEach(frames)}).observe(d.documentElement,{childList:!0,subtree:!0})};
d.readyState==="loading"?d.addEventListener("DOMContentLoaded",start):start();
// Where it reports, the exit and the panel are the proxy's own paths,
// never the data's: a page that loads this script with a data block of
// its own making (an injection on a page whose policy allows the origin's
// scripts) gets no other address out of it.
// One report per page view, a few seconds after load (errors found later go
// in an update when the page is left). No credentials: the report carries
// what the page ran, not who looked.
let sent=0,sentCount=0;
// A ticket page reports to its ticket; a production page sampled during a
// rollout reports to each ticket rolling out, from its side of it.
// A sampled page of a rollout was sent with a token in its own server
// timing: its report gives it back, so the proxy hears from this page (not
// another, not this one twice) in the minute it was sent.
const token=()=>{try{const n=performance.getEntriesByType("navigation")[0],e=n&&(n.serverTiming||[]).find(e=>e.name==="ticket-stamp-page");return e&&/^[0-9]{1,12}\.[0-9a-f]{16}$/.test(e.description)?e.description:""}catch(_){return""}};
// A rollout's page says whether it loaded one of each ticket's files (its
// own on the ticket's side, production's copy on production's): where a
// broken file shows, however few pages load it. An update says it again,
// with what the first report said (a route may load a file later).
// What the page loaded is kept as it comes (an observer gets every entry,
// whatever the timeline's buffer holds or a script clears); a ticket's file
// served from the proxy's mirror of another origin (/__stamp/o/https/host/…)
// is at that origin's address, as production's copy is.
const res=new Set;try{new PerformanceObserver(l=>{for(const e of l.getEntries())if(res.size<5000)res.add(e.name)}).observe({type:"resource",buffered:!0})}catch(_){}
const loc=n=>{let u;try{u=new URL(n)}catch(_){return""}if(u.origin!==location.origin)return u.origin+u.pathname;const m=/^\/__stamp\/o\/(https?)\/([^/]+)(\/.*)$/.exec(u.pathname);return m?m[1]+"://"+m[2]+m[3]:u.pathname};
const touched=t=>{if(!t)return!1;try{const at=new Set(t.at||[]),hs=t.hashed||[];for(const e of performance.getEntriesByType("resource"))res.size<5000&&res.add(e.name);
 for(const n of res){const p=loc(n);if(p&&(at.has(p)||hs.some(([a,n,z])=>p.length===a.length+n+z.length&&p.startsWith(a)&&p.endsWith(z))))return!0}return!1}catch(_){return!1}};
const wasTouched=new Map(),newlyTouched=()=>(D.reports||[]).some(to=>!wasTouched.get(to.ticket)&&touched(to.touch));
// An update goes when errors came since, or a ticket's file loaded since
// (a route that loads it after the first report).
const report=update=>{if(update&&S.count===sentCount&&!newlyTouched())return;const prev=sentCount;sentCount=S.count;const[instead,also]=prodSplit();
 for(const to of D.reports||[{ticket:D.ticket,side:D.side}]){
 const tch=touched(to.touch);
 const body=JSON.stringify({v:1,ticket:to.ticket,view:D.view,variant:D.variant,side:to.side,page:location.pathname.slice(0,200),update:!!update,previous_errors:prev,
  modules:{expected:mods.length,ran:[...S.ran],workers:[...S.worker],production:instead.slice(0,50).map(m=>m.p),production_also:also.slice(0,50).map(m=>m.p),not_run:S.worklet.size?[]:[...S.loaded].filter(h=>!S.ran.has(h)).map(h=>byHash.get(h).p),worklets:[...S.worklet].slice(0,20)},
  errors:S.errors,error_count:S.count,failed_loads:S.failed,token:D.view==="prod"?token():"",
  touched:tch,previously_touched:!!update&&!!wasTouched.get(to.ticket)});
 wasTouched.set(to.ticket,tch||!!wasTouched.get(to.ticket));
 try{F.call(W,location.origin+"/__stamp/report",{method:"POST",body,credentials:"omit",keepalive:!0,headers:{"content-type":"text/plain"}}).catch(()=>0)}catch(_){}}};
// A page prerendered ahead (speculation rules) loads and runs before anyone
// sees it, and may never be shown: it is a view from when it is shown
// (activated), and one never shown reports nothing. A page left before its
// report (pagehide sent it) and brought back from the back/forward cache
// does not send it twice.
const shown=f=>d.prerendering?d.addEventListener("prerenderingchange",f,{once:!0}):f();
W.addEventListener("load",()=>{hookSystem();shown(()=>{setTimeout(()=>{S.settled=!0;changed=!0;later()},2000);setTimeout(()=>{if(!sent){sent=1;report(!1)}},3000)})});
// A rollout's page put in the background reports then too: a phone's
// browser may discard it later without a pagehide, and a page never heard
// from counts as one that hung. (A ticket page waits: its report says
// what ran, and a tab switched away from early has not run it all yet.)
const gone=()=>{if(d.prerendering)return;sent?report(!0):(sent=1,report(!1))};
W.addEventListener("pagehide",gone);
if(D.view==="prod")d.addEventListener("visibilitychange",()=>{if(d.visibilityState==="hidden")gone()});
})();
